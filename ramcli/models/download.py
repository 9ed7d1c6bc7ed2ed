"""`ramcli models pull`: fetch a model's weights and tag files, check them, convert them.

Weights come from the Hugging Face hub through huggingface_hub (resumable downloads into its
own cache, with a progress bar); the small tag files come from the authors' repository at a
pinned commit and are checked against the sha256 in the manifest. Conversion (torch) is
imported only here, after the downloads, so ``ramcli tag`` never pays for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
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
# How long the TCP connect to the hub (or the proxy) may take before a download is given up. A
# reachable host answers in well under a second; without a network, huggingface_hub would instead
# retry five times with growing pauses (24 s measured) and print each retry.
REACH_SECONDS = 5.0


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
    check_reachable(url, f"fetch {Path(url).name}", fix="use `ramcli models import` with local files")
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


def check_reachable(url: str, what: str, *, fix: str) -> None:
    """Raise one DownloadError line unless a TCP connection to ``url``'s host (or to the proxy the
    environment names for it) opens within REACH_SECONDS.

    Why before the download: huggingface_hub meets an unreachable hub with five retries and a
    warning for each (24 s, a dozen lines, then an error about its cache); this says in a few
    seconds which host could not be reached and what to do. The lookup and connect run in a daemon
    thread, so a resolver that hangs cannot hold the command past the limit.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = None if urllib.request.proxy_bypass(host) else proxies.get(parts.scheme) or proxies.get("all")
    target, via = (host, port), ""
    if proxy:
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        target, via = (p.hostname or "", p.port or (443 if p.scheme == "https" else 80)), " through the proxy"
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection(target, timeout=REACH_SECONDS).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err)

    thread = threading.Thread(target=connect, name="ramcli-reach", daemon=True)
    thread.start()
    thread.join(REACH_SECONDS + 0.5)
    if outcome and outcome[0] is None:
        return
    err = outcome[0] if outcome else None
    reason = (getattr(err, "strerror", None) or first_line(err)) if err is not None else \
        f"no answer in {REACH_SECONDS:.0f} s"
    raise DownloadError(f"cannot {what}: {target[0]}:{target[1]}{via} cannot be reached ({reason})",
                        hint=f"connect to the network (a proxy: set HTTPS_PROXY; a mirror of the hub: set "
                             f"HF_ENDPOINT), or {fix}")


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's warnings (each retry of a failed request) off while it downloads: a
    failure ends in one DownloadError line. Its progress bar is not logging and stays."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _hub_cached(spec: dict[str, Any]) -> Path | None:
    """The file, when an earlier download left it in the Hugging Face cache: no network needed,
    so `ramcli models pull` repairs a damaged model offline too."""
    from huggingface_hub import hf_hub_download  # heavy import, only when downloading

    try:
        with _quiet_hub():
            return Path(hf_hub_download(repo_id=spec["repo_id"], filename=spec["filename"],
                                        revision=spec.get("revision"), repo_type=spec.get("repo_type", "model"),
                                        local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache it cannot read: download it
        return None


def _hub_file(spec: dict[str, Any], what: str, report: Report, *, fix: str) -> Path:
    """One file from the Hugging Face hub (resumable, into its cache), checked against ``spec["sha256"]``.

    ``what`` names the file in messages ("tag2text_swin_14m weights"); ``fix`` says how to proceed
    without the network. Every failure is one DownloadError line.
    """
    if spec.get("hub") != "huggingface":
        raise DownloadError(f"{what}: nothing downloadable", hint="use `ramcli models import`")
    path = _hub_cached(spec)
    if path is None:
        if _offline():
            raise DownloadError(f"offline: cannot download {what}", hint=fix)
        from huggingface_hub import constants, hf_hub_download

        check_reachable(constants.ENDPOINT, f"download {what}", fix=fix)
        size = spec.get("approx_bytes")
        report(f"downloading {what} ({human_bytes(size) if size else 'size unknown'}) "
               f"from {urllib.parse.urlsplit(constants.ENDPOINT).hostname}/{spec['repo_id']}")
        try:
            with _quiet_hub():
                path = Path(hf_hub_download(repo_id=spec["repo_id"], filename=spec["filename"],
                                            revision=spec.get("revision"), repo_type=spec.get("repo_type", "model")))
        except Exception as exc:  # the hub raises many types: offline, HTTP, DNS, disk full
            raise DownloadError(f"cannot download {what} ({type(exc).__name__}: {first_line(exc)[:200]})",
                                hint=f"check the network, or {fix}") from None
    want = spec.get("sha256")
    if want:
        got = sha256_file(path)
        if got != want:
            blob = path.resolve()  # the hub cache's snapshot entry links to this blob
            raise DownloadError(f"checksum mismatch for {what}: its sha256 is {got[:12]}..., the manifest pins "
                                f"{want[:12]}...", path=blob,
                                hint="the download is damaged or the file changed upstream: delete this file and "
                                     "run the command again; if it fails the same way, please report it")
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


def pull(name: str, report: Report = lambda _m: None, *, note: str | None = None) -> store.InstalledModel:
    """Download (or reuse) the weights and tag files of a known model, then convert it.

    ``note`` ("model X is not installed yet: ...") is said just before the first progress message:
    a pull that fails before doing anything (no network) then shows only its error line."""
    if note is not None:
        report = _after(note, report)
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


def _after(note: str, report: Report) -> Report:
    """``report``, saying ``note`` once before its first message."""
    said = False

    def say(message: str) -> None:
        nonlocal said
        if not said:
            said = True
            report(note)
        report(message)

    return say
