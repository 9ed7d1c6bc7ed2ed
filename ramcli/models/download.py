"""`ramcli models pull`: fetch a model's weights and tag files, check them, convert them.

Weights come from the Hugging Face hub through huggingface_hub (resumable downloads into its
own cache, with a progress bar); the small tag files come from the authors' repository at a
pinned commit and are checked against the sha256 in the manifest. Conversion (torch) is
imported only here, after the downloads, so ``ramcli tag`` never pays for it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramcli.config import Manifest, cache_dir, manifest
from ramcli.errors import DownloadError, RamcliError, first_line
from ramcli.hashing import sha256_file
from ramcli.models import store
from ramcli.models.families import FAMILIES, ConvertInputs, family_of

Report = Callable[[str], None]
# Fetched files that travel with a converted model unchanged, and their names there.
BUNDLED = {"notice": "NOTICE.txt", "license": "LICENSE"}


def bundled_files(files: dict[str, Path]) -> dict[str, Path]:
    """The authors' NOTICE and LICENSE among the fetched tag files, by their name in the model folder."""
    return {name: files[key] for key, name in BUNDLED.items() if key in files}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"} or \
        os.environ.get("RAMCLI_OFFLINE", "").lower() in {"1", "true", "yes"}


def fetch_file(url: str, sha256: str | None, report: Report) -> Path:
    """Download a small file once into the cache; the checksum decides whether it is usable."""
    target = cache_dir() / "downloads" / f"{(sha256 or hashlib.sha256(url.encode()).hexdigest())[:16]}-{Path(url).name}"
    if target.is_file() and (sha256 is None or hashlib.sha256(target.read_bytes()).hexdigest() == sha256):
        return target
    if _offline():
        raise DownloadError(f"offline: cannot fetch {url}",
                            hint="unset HF_HUB_OFFLINE/RAMCLI_OFFLINE, or use `ramcli models import` with local files")
    report(f"fetching {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot fetch {url} ({reason})",
                            hint="check the network, or use `ramcli models import` with local files") from None
    got = hashlib.sha256(data).hexdigest()
    if sha256 and got != sha256:
        raise DownloadError(f"checksum mismatch for {url} (got {got[:12]}..., want {sha256[:12]}...)",
                            hint="the source changed; please report it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def fetch_tag_files(m: Manifest, report: Report) -> dict[str, Path]:
    return {key: fetch_file(spec["url"], spec.get("sha256"), report) for key, spec in m.tag_files.items()}


def _hub_file(spec: dict[str, Any], what: str, report: Report, *, fix: str) -> Path:
    """One file from the Hugging Face hub (resumable, into its cache), checked against ``spec["sha256"]``.

    ``what`` names the file in messages ("tag2text_swin_14m weights"); ``fix`` says how to proceed
    without the network. Every failure is one DownloadError line.
    """
    if spec.get("hub") != "huggingface":
        raise DownloadError(f"{what}: nothing downloadable", hint="use `ramcli models import`")
    if _offline():
        raise DownloadError(f"offline: cannot download {what}", hint=fix)
    from huggingface_hub import hf_hub_download  # heavy import, only when downloading

    size = spec.get("approx_bytes")
    report(f"downloading {what} ({human_bytes(size) if size else 'size unknown'}) "
           f"from huggingface.co/{spec['repo_id']}")
    try:
        path = Path(hf_hub_download(repo_id=spec["repo_id"], filename=spec["filename"], revision=spec.get("revision"),
                                    repo_type=spec.get("repo_type", "model")))
    except Exception as exc:  # the hub raises many types: offline, HTTP, DNS, disk full
        raise DownloadError(f"cannot download {what} ({type(exc).__name__}: {first_line(exc)[:200]})",
                            hint=f"check the network, or {fix}") from None
    want = spec.get("sha256")
    if want and sha256_file(path) != want:
        raise DownloadError(f"checksum mismatch ({what})", path=path, hint="delete it and pull again")
    return path


def fetch_weights(m: Manifest, report: Report) -> Path:
    w = m.weights
    if w.get("hub") != "huggingface":
        raise DownloadError(f"model {m.name} has no downloadable weights", hint="use `ramcli models import`")
    return _hub_file(w, f"{m.name} weights", report,
                     fix=f"download {w['filename']} elsewhere and run "
                         f"`ramcli models import {w['filename']} --name {m.name}`")


def tokenizer_spec(m: Manifest) -> dict[str, Any] | None:
    """Where a captioning model's tokenizer vocabulary comes from (``architecture.tokenizer``)."""
    spec = m.data.get("architecture", {}).get("tokenizer")
    return dict(spec) if spec else None


def fetch_tokenizer(m: Manifest, report: Report) -> Path:
    """Tag2Text's BERT vocabulary (bert-base-uncased's vocab.txt, checksummed), from the hub."""
    spec = tokenizer_spec(m)
    if spec is None:
        raise DownloadError(f"model {m.name} names no tokenizer vocabulary",
                            hint="pass --vocab VOCAB.txt to `ramcli models import`")
    return _hub_file(spec, f"the tokenizer vocabulary of {m.name}", report,
                     fix=f"download {spec['filename']} from huggingface.co/{spec['repo_id']} elsewhere and pass "
                         f"it with --vocab to `ramcli models import`")


def caption_delete_tag_index(m: Manifest) -> list[int] | None:
    """Tags never passed to the captioner, from the manifest; None: the converter's default list."""
    value = m.data.get("architecture", {}).get("caption_delete_tag_index")
    return [int(i) for i in value] if value is not None else None


def pull(name: str, report: Report = lambda _m: None) -> store.InstalledModel:
    """Download (or reuse) the weights and tag files of a known model, then convert it."""
    m = manifest(name)
    family = FAMILIES.get(m.family)
    if not m.supported or family is None:
        raise RamcliError(f"model {name} ({m.title}) cannot be converted by this version of ramcli yet",
                          hint="use ram_plus_swin_large_14m, ram_swin_large_14m, tag2text_swin_14m "
                               "or clip_vit_b16_text")
    checkpoint = fetch_weights(m, report)
    files = fetch_tag_files(m, report)
    if family.needs_vocab:
        files["vocab"] = fetch_tokenizer(m, report)
    return convert(m, checkpoint, files, report, source={"kind": "pull", **m.weights})


def convert(m: Manifest, checkpoint: Path, files: dict[str, Path], report: Report,
            source: dict[str, object]) -> store.InstalledModel:
    """Convert fetched files with the converter of the manifest's family; ``files``: tag files by
    key, plus ``"vocab"`` (the tokenizer vocabulary) for a family that needs one."""
    from ramcli.models.convert.converters import import_checkpoint

    inputs = ConvertInputs(tag_list=files.get("tag_list"), tag_list_zh=files.get("tag_list_zh"),
                           thresholds=files.get("thresholds"), vocab=files.get("vocab"),
                           extra_files=bundled_files(files), image_size=m.preprocess.get("image_size"),
                           default_threshold=m.default_threshold, delete_tag_index=caption_delete_tag_index(m),
                           source=source)
    return import_checkpoint(checkpoint, m.name, inputs, family=family_of(m), report=report)
