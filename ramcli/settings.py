"""User settings: the options people pass every time, from a TOML file and ``RAMCLI_*`` variables.

Why here and not in the CLI: what a setting may hold, where the file lives and which source wins
(command line > environment > config file > default) is policy scripts and the CLI must share;
the CLI only turns the result into click's ``default_map`` so `--help` shows the effective defaults.

The file is a flat table, e.g. ``~/.config/ramcli/config.toml``::

    lang = "both"
    device = "cpu"
    threads = 4
    index = "~/Pictures/ramcli.db"

Reading it costs nothing when it does not exist (no TOML parser is imported): every start of
`ramcli` reads the settings, and a tag-only search answers in 0.3 s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path

from ramcli.errors import UsageError

CONFIG_ENV = "RAMCLI_CONFIG"


class Device(str, Enum):
    """Where inference runs: auto (CUDA if it loads, else CPU), cpu or cuda."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    tensorrt = "tensorrt"  # CUDA through onnxruntime's TensorRT provider (engines cached in the model folder)


class Precision(str, Enum):
    """Model weights: fp32, int8 (`ramcli models quantize`) or fp16 (`--to fp16`); ``models.store.PRECISIONS``."""

    fp32 = "fp32"
    int8 = "int8"
    fp16 = "fp16"
    bf16 = "bf16"  # not a file: OpenVINO runs the fp32 graphs in bfloat16 (--backend openvino)
    auto = "auto"  # fp32; fp16 on CUDA where its measured tag agreement there is >= 99.5 % (engine.resolve_precision)


class Backend(str, Enum):
    """The runtime of the encoder and tag head: onnxruntime, openvino (CPU) or auto (the faster, measured)."""

    onnxruntime = "onnxruntime"
    openvino = "openvino"
    auto = "auto"


class Decode(str, Enum):
    """JPEG decoding: exact, draft (scaled down by the decoder) or auto (draft on CUDA)."""

    auto = "auto"
    exact = "exact"
    draft = "draft"


class Lang(str, Enum):
    """Tag names in keywords and output."""

    en = "en"
    zh = "zh"
    both = "both"


class SidecarName(str, Enum):
    """XMP sidecar naming: auto (IMG_0001.xmp for camera RAW, photo.jpg.xmp for the rest), ext (photo.jpg.xmp:
    darktable, digiKam) or stem (photo.xmp: Lightroom)."""

    auto = "auto"
    ext = "ext"
    stem = "stem"


class QuantizeTo(str, Enum):
    """What `ramcli models quantize --to` makes."""

    int8 = "int8"
    fp16 = "fp16"


class Setting:
    """One setting: its key in the file, its type, its default; ``RAMCLI_<KEY>`` sets it too.

    (A plain class, not a dataclass: this module is imported at every start of `ramcli`.)
    """

    __slots__ = ("default", "key", "kind", "minimum")

    def __init__(self, key: str, kind: type, default: object, minimum: int | None = None) -> None:
        self.key, self.kind, self.default, self.minimum = key, kind, default, minimum

    @property
    def env(self) -> str:
        return "RAMCLI_" + self.key.upper()

    def parse(self, raw: object, where: str) -> object:
        """``raw`` (TOML value or environment text) as this setting's type; UsageError naming ``where``."""
        if isinstance(self.kind, type) and issubclass(self.kind, Enum):
            allowed = [m.value for m in self.kind]
            if raw not in allowed:
                raise UsageError(f"{where}: {raw!r} is not one of {', '.join(allowed)}")
            return self.kind(raw)
        if self.kind is int:
            if isinstance(raw, str):
                try:
                    raw = int(raw.strip())
                except ValueError:
                    raise UsageError(f"{where}: {raw!r} is not a whole number") from None
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise UsageError(f"{where}: {raw!r} is not a whole number")
            if self.minimum is not None and raw < self.minimum:
                raise UsageError(f"{where}: {raw} is below {self.minimum}")
            return raw
        if not isinstance(raw, str):
            raise UsageError(f"{where}: {raw!r} is not text")
        return Path(raw).expanduser() if self.kind is Path else raw


#: Every setting, in the order `ramcli config show` lists them.
SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("lang", Lang, Lang.en),
    Setting("sidecar_name", SidecarName, SidecarName.auto),
    Setting("hierarchy_root", str, "ramcli"),
    Setting("precision", Precision, Precision.auto),
    Setting("decode", Decode, Decode.auto),
    Setting("backend", Backend, Backend.onnxruntime),
    Setting("device", Device, Device.auto),
    Setting("threads", int, 0, minimum=0),
    Setting("batch_size", int, 4, minimum=1),
    Setting("index", Path, None),
)}


class Value:
    """A setting's effective value and where it came from (``default``, ``config file PATH``,
    ``env RAMCLI_X`` or ``command line``)."""

    __slots__ = ("key", "source", "value")

    def __init__(self, key: str, value: object, source: str) -> None:
        self.key, self.value, self.source = key, value, source

    def __repr__(self) -> str:
        return f"Value({self.key!r}, {self.value!r}, {self.source!r})"

    def as_dict(self) -> dict[str, object]:
        v = self.value.value if isinstance(self.value, Enum) else self.value
        return {"key": self.key, "value": str(v) if isinstance(v, Path) else v, "source": self.source}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``RAMCLI_CONFIG``, else ``config.toml`` in the platform's user config folder."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("ramcli")) / "config.toml"


def read_config(path: Path) -> dict[str, object]:
    """The settings ``path`` sets, checked; none when the file does not exist.

    A bad file is a UsageError (exit 2) naming the file and the key: a typo must not be ignored
    silently, since the option it meant would then quietly keep its default.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the config file ({err})", path=path) from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"is not valid TOML ({err})", path=path) from None
    values: dict[str, object] = {}
    for key, raw in doc.items():
        setting = SETTINGS.get(key)
        if setting is None:
            raise UsageError(f"unknown setting {key!r}", path=path, hint=f"known: {', '.join(SETTINGS)}")
        values[key] = setting.parse(raw, f"{path}: {key}")
    return values


def resolve(overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None) -> dict[str, Value]:
    """Every setting's effective value: ``overrides`` (the command line) > environment > file > default."""
    env = os.environ if env is None else env
    path = config_path(env)
    from_file = read_config(path)
    out: dict[str, Value] = {}
    for key, setting in SETTINGS.items():
        if overrides and overrides.get(key) is not None:
            out[key] = Value(key, setting.parse(_plain(overrides[key]), f"--{key.replace('_', '-')}"), "command line")
        elif env.get(setting.env) not in (None, ""):
            out[key] = Value(key, setting.parse(env[setting.env], f"env {setting.env}"), f"env {setting.env}")
        elif key in from_file:
            out[key] = Value(key, from_file[key], f"config file {path}")
        else:
            out[key] = Value(key, setting.default, "default")
    return out


def configured(env: Mapping[str, str] | None = None) -> dict[str, object]:
    """Only the settings the environment or the config file set (what must replace a default)."""
    return {k: v.value for k, v in resolve(env=env).items() if v.source != "default"}


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value
