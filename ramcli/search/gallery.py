"""What the gallery (`ramcli serve`, `ramcli search --html`) shows of an indexed image: its page and its
thumbnails. Read from the index and the files; nothing here writes anything the user owns.

Images are named by their image hash (``IMAGE_ID``: 32 hex digits), never by a path: a request can only
reach what the index holds, and a path in a URL could not leak or traverse anything. Thumbnails are made
once (Pillow, draft-mode JPEG decoding; RAW through its preview; a video's still at a moment) and cached by
image hash beside the index (``INDEX.thumbs/``): a moved photo keeps its thumbnail, an edited one gets a new
hash and so a new one.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramcli.index import Index
from ramcli.media import is_video

IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
SIZES = (320, 1024)  # grid and page


@dataclass
class Place:
    """One file of the image (copies share an image) and where ramcli's keywords for it are."""

    path: str
    exists: bool
    keywords_in: str  # the photo itself, or its sidecar's path; "" when indexed with --no-write
    written: list[str] = field(default_factory=list)


@dataclass
class ImagePage:
    id: str
    model: str
    places: list[Place]
    tags: list[dict[str, Any]]  # name, score, verdict (confirm | reject | None)
    rejected: list[str]  # the user's rejections on this image (not among the tags any more)
    caption: str | None
    width: int
    height: int
    taken_at: str | None
    duration: float | None  # a video
    stills: list[dict[str, Any]]  # a video's moments: t, tags

    @property
    def video(self) -> bool:
        return self.duration is not None or bool(self.stills)


def valid_id(image_id: str) -> bool:
    return bool(IMAGE_ID.match(image_id))


def _keywords_in(path: str, storage: str) -> str:
    if not storage:
        return ""
    if storage == "embed":
        return path
    from ramcli import metadata

    naming = storage.removeprefix("sidecar-")
    return str(metadata.sidecar_path(Path(path), metadata.WriteOptions(sidecar=True, sidecar_name=naming)))


def page(index: Index, model: str, image_id: str) -> ImagePage | None:
    """Everything about one indexed image, or None for an id the index does not hold."""
    if not valid_id(image_id):
        return None
    info = index.image_info(image_id, model)
    rows = index.photos_with_hash(image_id, model)
    if info is None or not rows:
        return None
    said = index.verdicts_for([image_id]).get(image_id, {})
    tags = [{"name": name, "score": score, "verdict": said.get(name)} for _, name, score in
            index.tags_of(image_id, model)]
    shown = {t["name"] for t in tags}
    stills = [{"t": s.t, "tags": sorted(s.tags, key=lambda n: -s.tags[n])[:5]}
              for s in index.stills_of(model, [image_id], cls=False).get(image_id, [])]
    places = [Place(r.path, os.path.exists(r.path), _keywords_in(r.path, r.storage), r.written) for r in rows]
    return ImagePage(image_id, model, places, tags, sorted(n for n, v in said.items() if v == "reject" and
                                                             n not in shown),
                     index.caption_of(image_id, model), info[0], info[1], info[2], info[3], stills)


def thumbnail(index: Index, model: str, image_id: str, *, size: int = SIZES[0], t: float | None = None) -> bytes | None:
    """A JPEG of the image no larger than ``size`` on its long side (a video: its still nearest ``t``, or its
    best still), cached; None when the id is unknown or none of its files is there any more."""
    if not valid_id(image_id) or size not in SIZES:
        return None
    folder = index.path.with_name(index.path.name + ".thumbs")
    moment = "" if t is None else f"-{round(t * 1000)}"
    cached = folder / f"{image_id}-{size}{moment}.jpg"
    with contextlib.suppress(OSError):
        return cached.read_bytes()
    paths = [p for p in index.paths_with_hash(image_id) if os.path.exists(p)]
    if not paths:
        return None
    from PIL import Image

    from ramcli.errors import ImageError

    try:
        img = _picture(index, model, image_id, Path(paths[0]), size, t)
    except (ImageError, OSError):
        return None
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=85)
    data = out.getvalue()
    with contextlib.suppress(OSError):  # a read-only index folder: served, not cached
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".jpg")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, cached)
    return data


def _picture(index: Index, model: str, image_id: str, path: Path, size: int, t: float | None) -> Any:
    from ramcli.runtime.images import read_photo

    if not is_video(path):
        return read_photo(path, draft=size).rgb  # upright; a RAW's preview
    from ramcli.runtime.video import frame_at

    stills = index.stills_of(model, [image_id], cls=False).get(image_id, [])
    if t is None and stills:
        t = max(stills, key=lambda s: sum(s.tags.values())).t
    return frame_at(path, t or 0.0).rgb
