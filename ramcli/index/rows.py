"""The typed rows the index hands out and takes in. No SQL here, and no numpy import: a tag-only
search reads these types without ever loading numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

EMBED_DIM = 512  # CLIP ViT-B/16 width: CLS embeddings, image tokens and label embeddings


@dataclass(frozen=True)
class PhotoRow:
    path: str
    hash: str
    size: int
    mtime_ns: int
    written: list[str]
    storage: str
    model: str
    written_caption: str | None = None  # the caption ramcli put into the file (Tag2Text)


@dataclass(frozen=True)
class FailureRow:
    """A file whose image data could not be read, and the file state it failed in (``failures``)."""

    path: str
    size: int
    mtime_ns: int
    model: str
    error: str  # the one line the run showed, file name included

    def matches(self, size: int, mtime_ns: int, model: str) -> bool:
        """Whether the file is still exactly as it was when it failed, for the same model."""
        return (self.size, self.mtime_ns, self.model) == (size, mtime_ns, model)


@dataclass(frozen=True)
class ImageRecord:
    """What one inference produced for one image."""

    hash: str
    model: str
    width: int
    height: int
    taken_at: str | None
    cls: np.ndarray | None  # (512,) float32, in CLIP space; None for Tag2Text (its encoder is not)
    tokens: np.ndarray | None  # (N, 512) stored as float16
    tags: list[tuple[int, str, float]]  # (tag index, name, score)
    caption: str | None = None  # Tag2Text
    duration: float | None = None  # a video's length in seconds
    # a video's sampled moments: (seconds, CLS (512,) or None, tokens (N, 512) or None, [(tag index, name, score)])
    stills: list[tuple[float, np.ndarray | None, np.ndarray | None, list[tuple[int, str, float]]]] | None = None


@dataclass(frozen=True)
class StillRow:
    """One sampled moment of a video, as search reads it back."""

    hash: str
    idx: int
    t: float  # seconds from the start
    cls: np.ndarray | None  # (512,) float32
    tags: dict[str, float]  # tag name -> this still's score


@dataclass(frozen=True)
class CustomTagRow:
    """One ``ramcli add-tag`` definition as stored; ``vocab.custom.CustomTag`` is built from it."""

    id: int
    name: str
    name_zh: str | None
    parent: str | None
    threshold: float
    descriptions: tuple[str, ...]
    embeds: np.ndarray  # (D, 512) float32
    encoder: str
    dirty: bool  # defined or changed, not yet applied to every indexed photo


VERDICTS = ("confirm", "reject")
SOURCES = ("cli", "file", "import")


@dataclass(frozen=True)
class FeedbackRow:
    """One verdict of the user's on one image and tag (``feedback``): ``verdict`` confirm | reject,
    ``source`` cli (`ramcli tags confirm/reject`) | file (read from the photo's keywords) | import."""

    hash: str
    tag: str  # the English tag name
    verdict: str
    source: str
    path: str | None = None  # where the photo was when the verdict was given (for people)
    at: str | None = None  # ISO time; None: now


@dataclass(frozen=True)
class ThresholdRow:
    """A calibrated threshold (``thresholds``): used for ``tag`` on ``model`` instead of ``official``."""

    model: str
    tag: str
    threshold: float
    official: float
    confirmed: int  # the evidence it was fitted from
    rejected: int


@dataclass(frozen=True)
class DupeCandidate:
    """One indexed photo as `ramcli dupes` weighs it: its image, and what a keeper is chosen by."""

    path: str
    hash: str  # the image-data hash: equal hashes are exact duplicates, whatever the metadata
    model: str
    size: int
    mtime_ns: int  # as recorded after ramcli's write (which keeps the file's time unless --touch)
    has_keywords: bool  # ramcli wrote keywords into it (or its sidecar)
    cls_rowid: int | None  # images.rowid of its CLS embedding; None: no embedding (Tag2Text, never tagged)
    width: int
    height: int
    taken_at: str | None  # the EXIF capture date, ISO


# (path, hash, taken_at) of one photo, as search reports it
PhotoRef = tuple[str, str, str | None]


@dataclass(frozen=True)
class WriteRow:
    """The journal of one file ramcli rewrote (a photo or its sidecar), and how to undo it."""

    target: str  # the file written: the photo or its sidecar
    photo: str
    recipe: bytes | None  # rebuilds the file before ramcli's first write from the file now (None: no exact undo)
    after_sha: str  # sha256 of the file as ramcli left it ("absent": ramcli deleted it)
    keywords: list[str]  # ramcli's keywords in that file
    pending: bool = False  # committed before the replace; cleared with the batch's index rows
    prev_recipe: bytes | None = None  # the row before the pending write (restored if the write never happened)
    prev_after_sha: str | None = None
