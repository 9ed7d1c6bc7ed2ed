"""A video -> a few upright stills for the model, decoding keyframes only (PyAV / FFmpeg).

Decoding every frame of a 10-minute 1080p clip costs minutes; tagging needs a handful of moments. The decoder
is told to skip everything but keyframes (``skip_frame = "NONKEY"``: inter frames are not even decoded),
and where the container can seek, it jumps to each moment wanted instead of reading through: at most one
still per ``every`` seconds, at most ``most`` per video, spread over the whole clip (a long video gets its
stills further apart, never more of them). The stream's display matrix (a phone held upright) is applied
as the EXIF orientation is for photos.

A video's identity (``video_hash``) is a hash of its video stream's packets: the same clip whatever another
program writes into its container (a title, a location, a new creation date).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ramcli.errors import ImageError, first_line
from ramcli.files import open_regular

EVERY = 2.0  # seconds: at most one still per this long
MOST = 12  # stills per video at most
_EPS = 1e-3


@dataclass
class Frame:
    t: float  # seconds from the start of the video
    rgb: Image.Image  # upright


@dataclass
class VideoSample:
    frames: list[Frame]
    size: tuple[int, int]  # upright (width, height)
    duration: float | None  # seconds, when the container says
    taken_at: str | None
    decoded: int = 0  # frames the decoder produced (keyframes only): what the sampling cost
    seeks: int = 0
    notes: list[str] = field(default_factory=list)


def _upright(img: Image.Image, rotation: float) -> Image.Image:
    """``rotation``: the display matrix's angle (counter-clockwise degrees), as PyAV reports it."""
    turn = round(rotation) % 360
    if turn == 90:
        return img.transpose(Image.Transpose.ROTATE_90)
    if turn == 180:
        return img.transpose(Image.Transpose.ROTATE_180)
    if turn == 270:
        return img.transpose(Image.Transpose.ROTATE_270)
    return img


def _taken_at(container) -> str | None:
    value = (container.metadata or {}).get("creation_time") or ""
    if len(value) < 19 or value.startswith("1970") or value.startswith("1904"):
        return None
    return value[:10] + "T" + value[11:19]


def _failure(path: Path, exc: BaseException) -> ImageError:
    if isinstance(exc, FileNotFoundError):
        return ImageError("file vanished before it could be read", path=path, lasting=False)
    if isinstance(exc, PermissionError):
        return ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False)
    return ImageError(f"cannot decode video ({first_line(exc)})", path=path,
                      hint="the file may be truncated, still being copied, or not a video; copy it again, or skip it")


def sample_video(path: Path, *, every: float = EVERY, most: int = MOST, min_side: int = 384,
                 orient: bool = True) -> VideoSample:
    """Stills from keyframes (see the module's docstring); ImageError when there is none to be had."""
    import av

    path = Path(path)
    try:
        with open_regular(path) as f, av.open(f, mode="r") as container:
            if not container.streams.video:
                raise ImageError("no video stream in it", path=path, hint="an audio-only file? skip it")
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            stream.thread_type = "AUTO"
            tb = float(stream.time_base) if stream.time_base else 1e-6
            start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            duration = (float(stream.duration * tb) if stream.duration
                        else container.duration / 1e6 if container.duration else None)
            gap = max(every, duration / most) if duration else every
            sample = VideoSample([], (stream.codec_context.width, stream.codec_context.height), duration,
                                 _taken_at(container))

            def take(frame) -> None:
                img = frame.to_image()
                turn = (getattr(frame, "rotation", 0) or 0) if orient else 0
                img = _upright(img, turn)
                if not sample.frames and round(turn) % 180 == 90:
                    sample.size = sample.size[::-1]
                if min(img.size) > 2 * min_side:  # the model sees min_side: keep less in memory
                    scale = 2 * min_side / min(img.size)
                    img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                                     Image.Resampling.BILINEAR)
                sample.frames.append(Frame((frame.time or 0.0) - start, img))

            def wanted(t: float) -> bool:
                return not sample.frames or t >= sample.frames[-1].t + every - _EPS

            target = 0.0
            seekable = duration is not None and container.format.name not in ("mpegts", "avi")
            while seekable and len(sample.frames) < most and (duration is None or target <= duration + _EPS):
                try:
                    container.seek(int((start + target) / tb), stream=stream, backward=True)
                except av.error.FFmpegError:
                    seekable = False
                    break
                sample.seeks += 1
                got = None
                for frame in container.decode(stream):
                    sample.decoded += 1
                    t = (frame.time or 0.0) - start
                    if wanted(t):
                        got = frame
                        break
                if got is None:
                    break
                take(got)
                target = max(target + gap, sample.frames[-1].t + every)
            if not seekable and not sample.frames:  # no seeking (a stream without an index): one pass
                for frame in container.decode(stream):
                    sample.decoded += 1
                    t = (frame.time or 0.0) - start
                    if t >= target - _EPS and wanted(t):
                        take(frame)
                        target = t + gap
                        if len(sample.frames) >= most:
                            break
            if not sample.frames:
                raise ImageError("no picture could be decoded from it", path=path,
                                 hint="the file may be truncated or still being copied; copy it again, or skip it")
            return sample
    except ImageError:
        raise
    except Exception as exc:  # FFmpeg errors come in many types; any of them is this file's problem
        raise _failure(path, exc) from None


def frame_at(path: Path, t: float, *, orient: bool = True) -> Frame:
    """The keyframe at or just before second ``t`` (a still's own moment: stills are keyframes), upright."""
    import av

    path = Path(path)
    try:
        with open_regular(path) as f, av.open(f, mode="r") as container:
            if not container.streams.video:
                raise ImageError("no video stream in it", path=path, hint="an audio-only file? skip it")
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            tb = float(stream.time_base) if stream.time_base else 1e-6
            start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            with contextlib.suppress(av.error.FFmpegError):  # no index: decode from the start
                container.seek(int((start + max(t, 0.0)) / tb), stream=stream, backward=True)
            best = None
            for frame in container.decode(stream):
                at = (frame.time or 0.0) - start
                if best is not None and at > t + _EPS:
                    break
                best = (at, frame)
                if at >= t - _EPS:
                    break
            if best is None:
                raise ImageError("no picture could be decoded from it", path=path,
                                 hint="the file may be truncated; copy it again, or skip it")
            img = best[1].to_image()
            return Frame(best[0], _upright(img, (getattr(best[1], "rotation", 0) or 0) if orient else 0))
    except ImageError:
        raise
    except Exception as exc:
        raise _failure(path, exc) from None


def video_hash(path: Path) -> str:
    """Identity of a video: a hash of its first video stream's packets (demuxed, not decoded)."""
    import av

    path = Path(path)
    try:
        with open_regular(path) as f, av.open(f, mode="r") as container:
            if not container.streams.video:
                raise ImageError("no video stream in it", path=path, hint="an audio-only file? skip it")
            stream = container.streams.video[0]
            h = hashlib.blake2b(digest_size=16)
            h.update(f"video:{stream.codec_context.name}:{stream.codec_context.width}x"
                     f"{stream.codec_context.height}:".encode())
            packets = 0
            for packet in container.demux(stream):
                if packet.size:
                    h.update(bytes(packet))
                    packets += 1
            if not packets:
                raise ImageError("its video stream is empty", path=path, hint="a truncated copy? copy it again")
            return h.hexdigest()
    except ImageError:
        raise
    except Exception as exc:
        raise _failure(path, exc) from None
