"""Test-corpus writers for the media a camera or phone leaves in a library: RAW photos (DNG) and videos.

Why these are written, not shipped: camera RAW files are large and rarely under a licence a test suite can
carry, and a video that exercises rotation, variable frame rate, keyframe spacing and an audio track is
hard to find small. Both are made here in well under a second, from numbers a test chooses, so a test can
assert exact facts (the flip, the keyframe count, the pts) instead of trusting a sample's history.

* ``write_dng``: a real DNG 1.4 (pidng's TIFF writer) holding a Bayer CFA mosaic of an sRGB image, an
  Orientation, and optionally a JPEG preview in a SubIFD, the layout LibRaw (rawpy) finds with
  ``extract_thumb()``. ``rawpy.imread(p).postprocess()`` gives back the image (correlation > 0.99).
* ``write_video``: an mp4 (h264/hevc + aac) or webm/mkv (vp9 + opus) from PyAV's bundled encoders, with a
  display matrix (rotation), optional variable frame rate, a keyframe every ``gop`` frames, and content
  that changes over time (``scenes`` or moving shapes).
* ``video_facts``: what PyAV reads back, so a test can check the corpus is what it asked for.

Reading rotation back with PyAV 18 (FFmpeg 8): a decoded frame's ``frame.rotation`` (counter-clockwise
degrees, -180..180, from the frame's ``DISPLAYMATRIX`` side data, which the decoder copies from the
stream). The stream object has no rotation attribute and no ``rotate`` metadata any more; mp4, mov, mkv
and webm all carry it (Matroska as a projection roll), exiftool shows it (``Rotation``) for mp4/mov only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
from pidng.dng import DNG, Tag, Type, dngIFD, dngTag
from PIL import Image, ImageDraw

from conftest import SHARED

Codec = Literal["h264", "hevc", "vp9"]
DEMO_PHOTO = SHARED / "data" / "photos" / "demo2.jpg"

# XYZ (D65) -> linear sRGB. As a DNG ColorMatrix1 (XYZ -> camera) it makes the "camera" an sRGB camera, so a
# raw developer's default sRGB output reproduces the image the mosaic was made from.
_XYZ_TO_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)
_WHITE = 4095  # 12-bit sensor values, stored in 16-bit samples (no packing: simplest for every reader)


# --- pictures -----------------------------------------------------------------------------------------


def synthetic_rgb(size: tuple[int, int] = (640, 480), seed: int = 0) -> np.ndarray:
    """A HxWx3 uint8 image with structure (gradient, a disc, a bar) so correlations and rotations are testable.

    A flat or noise-only image would correlate with anything or nothing; edges at known places also show
    which way a reader rotated it.
    """
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 1 - (xx / w + yy / h) / 2], -1)[..., rng.permutation(3)]
    if seed % 2:
        img = img[::-1]  # other seeds differ in layout too, so scenes built from seeds are told apart
    cx, cy = w * (0.25 + 0.1 * rng.random()), h * (0.3 + 0.1 * rng.random())
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.2 * h) ** 2] = (0.9, 0.2, 0.1)
    img[int(h * 0.6) : int(h * 0.8), int(w * 0.55) : int(w * 0.85)] = (0.1, 0.8, 0.2)
    return (img * 255).clip(0, 255).astype(np.uint8)


def photo_rgb(size: tuple[int, int] = (640, 480), path: Path = DEMO_PHOTO) -> np.ndarray:
    """A real photo (``shared/data/photos/demo2.jpg``) resized to ``size``; the synthetic image when absent.

    Real content matters for tests that run a tagger over the developed RAW; shared/ is optional, so this
    falls back instead of failing.
    """
    if not path.is_file():
        return synthetic_rgb(size)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    v = rgb.astype(np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def bayer_mosaic(rgb: np.ndarray, white: int = _WHITE) -> np.ndarray:
    """The RGGB CFA mosaic (uint16, linear light, 0..white) a sensor would record for this sRGB image."""
    lin = _srgb_to_linear(rgb)
    mos = np.empty(rgb.shape[:2], np.float64)
    mos[0::2, 0::2] = lin[0::2, 0::2, 0]
    mos[0::2, 1::2] = lin[0::2, 1::2, 1]
    mos[1::2, 0::2] = lin[1::2, 0::2, 1]
    mos[1::2, 1::2] = lin[1::2, 1::2, 2]
    return np.round(mos * white).astype(np.uint16)


# --- DNG ----------------------------------------------------------------------------------------------


def _tag(tag: tuple[int, tuple[int, int]], value: object) -> dngTag:
    return dngTag(tag, value)


def _ifd_pointer(tag_id: int, sub: dngIFD) -> dngTag:
    """An IFD-pointer entry (SubIFDs 330, ExifIFD 34665) pointing at ``sub``.

    pidng 4.0.9's own ``Type.IFD`` path crashes (it pads a str with bytes), but its writer handles a tag
    whose ``subIFD`` is set: it lays the IFD out in the parent's data area and writes its offset as a LONG.
    """
    entry = dngTag((tag_id, Type.Long), [0])
    entry.subIFD = sub
    return entry


def dng_private_data(makernote: bytes, original_offset: int = 0) -> bytes:
    """Adobe's DNGPrivateData block carrying a maker note ("Adobe" NUL "MakN", length, byte order, offset).

    This is how Adobe's converter keeps a camera's maker note in a DNG; a metadata writer that drops or
    moves the tag loses it, which is what a test of "writing keywords keeps everything else" looks for.
    """
    body = b"II" + original_offset.to_bytes(4, "big") + makernote
    return b"Adobe\x00MakN" + len(body).to_bytes(4, "big") + body


def write_dng(
    path: Path | str,
    *,
    rgb: np.ndarray | None = None,
    size: tuple[int, int] = (640, 480),
    orientation: int = 1,
    preview: bool = True,
    make: str = "ramcli",
    model: str = "Synthetic Bayer",
    datetime_original: str | None = "2024:05:17 10:20:30",
    makernote: bytes | None = None,
    private_data: bytes | None = None,
) -> Path:
    """Write a DNG whose raw data is the Bayer mosaic of ``rgb`` (default: ``synthetic_rgb(size)``).

    Layout (what LibRaw, exiftool and exiv2 all accept; exiftool -validate says OK): IFD0 is the raw image
    (NewSubfileType 0, CFA RGGB, one uncompressed 16-bit tile, 12-bit values, black 0, white 4095,
    ColorMatrix1 = XYZ->sRGB so the "camera" is an sRGB one, AsShotNeutral 1,1,1) with the TIFF Orientation
    (1..8) that rawpy reports as ``sizes.flip`` (1->0, 2->1, 3->3, 4->2, 5->4, 6->6, 7->7, 8->5). With
    ``preview`` a SubIFD holds a same-size baseline JPEG (NewSubfileType 1, Compression 7, YCbCr), which
    ``rawpy.imread(p).extract_thumb()`` returns as ``ThumbFormat.JPEG`` (LibRaw adds an Exif APP1 to it, so
    its bytes are longer than the stored JPEG). The preview's pixels are unrotated, like a camera's.
    An Exif IFD holds ``datetime_original`` and ``makernote`` (an opaque MakerNote, tag 37500);
    ``private_data`` becomes IFD0's DNGPrivateData (see ``dng_private_data``).
    ``rgb`` must have even height and width (whole 2x2 Bayer cells). 640x480: ~630 KB, written in ~30 ms.
    """
    if rgb is None:
        rgb = synthetic_rgb(size)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or h % 2 or w % 2:
        raise ValueError(f"rgb must be HxWx3 with even H and W, got {rgb.shape}")
    if not 1 <= orientation <= 8:
        raise ValueError(f"orientation must be 1..8, got {orientation}")

    tile = bayer_mosaic(rgb).tobytes()
    dng = DNG()
    dng.ImageDataStrips.append(tile)
    raw = dngIFD()
    tile_offsets = _tag(Tag.TileOffsets, [0])
    raw.tags += [
        tile_offsets,
        _tag(Tag.NewSubfileType, [0]),
        _tag(Tag.ImageWidth, [w]),
        _tag(Tag.ImageLength, [h]),
        _tag(Tag.BitsPerSample, [16]),
        _tag(Tag.Compression, [1]),
        _tag(Tag.PhotometricInterpretation, [PhotometricInterpretation.Color_Filter_Array]),
        _tag(Tag.Make, make),
        _tag(Tag.Model, model),
        _tag(Tag.Orientation, [orientation]),
        _tag(Tag.SamplesPerPixel, [1]),
        _tag(Tag.PlanarConfiguration, [1]),
        _tag(Tag.Software, "ramcli tests/media.py (PiDNG)"),
        _tag(Tag.TileWidth, [w]),
        _tag(Tag.TileLength, [h]),
        _tag(Tag.TileByteCounts, [len(tile)]),
        _tag(Tag.CFARepeatPatternDim, [2, 2]),
        _tag(Tag.CFAPattern, CFAPattern.RGGB),
        _tag(Tag.DNGVersion, DNGVersion.V1_4),
        _tag(Tag.DNGBackwardVersion, DNGVersion.V1_1),
        _tag(Tag.UniqueCameraModel, f"{make} {model}"),
        _tag(Tag.BlackLevel, [0]),
        _tag(Tag.WhiteLevel, [_WHITE]),
        _tag(Tag.ColorMatrix1, [(round(v * 10000), 10000) for row in _XYZ_TO_SRGB for v in row]),
        _tag(Tag.CalibrationIlluminant1, [CalibrationIlluminant.D65]),
        _tag(Tag.AsShotNeutral, [(1, 1), (1, 1), (1, 1)]),
    ]
    if private_data is not None:
        raw.tags.append(_tag(Tag.DNGPrivateData, list(private_data)))
    exif = dngIFD()
    if datetime_original:
        exif.tags.append(_tag(Tag.DateTimeOriginal, datetime_original))
    if makernote is not None:
        exif.tags.append(_tag((37500, Type.Undefined), list(makernote)))
    if exif.tags:
        raw.tags.append(_ifd_pointer(Tag.EXIF_IFD[0], exif))
    strip_offsets = None
    if preview:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=85)
        jpeg = buf.getvalue()
        dng.ImageDataStrips.append(jpeg)
        prev = dngIFD()
        strip_offsets = _tag(Tag.StripOffsets, [0])
        prev.tags += [
            strip_offsets,
            _tag(Tag.NewSubfileType, [1]),
            _tag(Tag.ImageWidth, [w]),
            _tag(Tag.ImageLength, [h]),
            _tag(Tag.BitsPerSample, [8, 8, 8]),
            _tag(Tag.Compression, [7]),
            _tag(Tag.PhotometricInterpretation, [6]),
            _tag(Tag.SamplesPerPixel, [3]),
            _tag(Tag.RowsPerStrip, [h]),
            _tag(Tag.StripByteCounts, [len(jpeg)]),
            _tag(Tag.PlanarConfiguration, [1]),
            _tag(Tag.PreviewColorSpace, [2]),
        ]
        raw.tags.append(_ifd_pointer(Tag.SubIFD[0], prev))
    dng.IFDs.append(raw)
    total = dng.dataLen()  # lays out the strips: dng.StripOffsets[i] is where strip i goes
    tile_offsets.setValue([dng.StripOffsets[0]])
    if strip_offsets is not None:
        strip_offsets.setValue([dng.StripOffsets[1]])
    out = bytearray(total)
    dng.setBuffer(out)
    dng.write()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))
    return path


# --- video --------------------------------------------------------------------------------------------

_VIDEO = {
    # codec -> (encoder, pixel format, audio encoder, encoder options that pin keyframes to every gop frames)
    "h264": (
        "libx264",
        "yuv420p",
        "aac",
        {"preset": "ultrafast", "x264-params": "scenecut=0:keyint={g}:min-keyint={g}"},
    ),
    "hevc": (
        "libx265",
        "yuv420p",
        "aac",
        {"preset": "ultrafast", "x265-params": "log-level=error:scenecut=0:keyint={g}:min-keyint={g}:open-gop=0"},
    ),
    "vp9": ("libvpx-vp9", "yuv420p", "libopus", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}),
}
_AUDIO_RATE = 48000  # opus only takes 48 kHz; aac is happy with it too
_VFR_STEPS = (0.5, 1.0, 1.5, 1.0)  # frame durations in 1/fps units: irregular, but averaging to fps


def moving_shapes(i: int, n: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``i`` of ``n``: a colour wash with a disc and a square crossing it, so every frame differs."""
    w, h = size
    t = i / max(n - 1, 1)
    hue = np.array([math.sin(2 * math.pi * (t + k / 3)) * 0.5 + 0.5 for k in range(3)])
    img = Image.fromarray(np.broadcast_to((40 + 120 * hue).astype(np.uint8), (h, w, 3)).copy())
    d = ImageDraw.Draw(img)
    r = h // 6
    x = int(r + t * (w - 2 * r))
    d.ellipse((x - r, h // 3 - r, x + r, h // 3 + r), fill=(230, 40, 30))
    y = int(r + t * (h - 2 * r))
    d.rectangle((w - x - r, y - r, w - x + r, y + r), fill=(30, 200, 60))
    return np.asarray(img)


def _fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    return np.asarray(Image.fromarray(np.asarray(img, np.uint8)[..., :3]).resize(size, Image.Resampling.BILINEAR))


def _frame_times(n: int, fps: int, vfr: bool) -> list[Fraction]:
    """Start time of each frame in seconds; VFR cycles through _VFR_STEPS so pts deltas are irregular."""
    step = Fraction(1, fps)
    times, t = [], Fraction(0)
    for i in range(n):
        times.append(t)
        t += step * Fraction(_VFR_STEPS[i % len(_VFR_STEPS)]).limit_denominator(8) if vfr else step
    return times


def write_video(
    path: Path | str,
    *,
    codec: Codec = "h264",
    seconds: float = 6.0,
    fps: int = 25,
    size: tuple[int, int] = (320, 240),
    rotate: int = 0,
    vfr: bool = False,
    audio: bool = True,
    gop: int = 25,
    scenes: list[np.ndarray] | None = None,
) -> Path:
    """Write a short video with the properties a phone's clips have and a frame sampler must cope with.

    * container: from the suffix; h264/hevc need ``.mp4``/``.mov``/``.mkv``, vp9 ``.webm``/``.mkv``.
    * ``rotate``: clockwise degrees a player turns the coded frames to show them upright, the convention of
      a phone's mp4 ``rotate`` tag and exiftool's ``Rotation``. Written as the stream's display matrix
      (``VideoStream.set_display_rotation(-rotate)``; FFmpeg's angle is counter-clockwise). Read back,
      each decoded frame's ``frame.rotation`` is ``-rotate`` normalised to -180..180 (90 -> -90, 270 -> 90).
      The coded frames keep ``size`` (landscape); the display is portrait for 90/270.
    * ``vfr``: frame durations cycle 0.5, 1, 1.5, 1 frame periods (pts in ms, time base 1/1000): the same
      frame count as CFR and about the same length (6 s at 25 fps: 5.98 s), irregular pts deltas.
    * ``gop``: a keyframe every ``gop`` frames exactly (scene-cut detection off): ``ceil(frames / gop)``
      keyframe packets. A keyframe-only decode (``skip_frame = "NONKEY"``) yields that many frames for h264
      and hevc, but FFmpeg's vp9 decoder ignores skip_frame and yields every frame: a sampler must demux
      and pick ``packet.is_keyframe`` (or check ``frame.key_frame``) to be codec-agnostic.
    * ``audio``: a tone that changes pitch each second (aac in mp4/mov, opus in webm/mkv).
    * ``scenes``: HxWx3 uint8 images shown in turn for equal time (resized to ``size``); default: moving
      shapes. ``size`` must be even (yuv420p).
    """
    path = Path(path)
    if codec not in _VIDEO:
        raise ValueError(f"codec must be one of {sorted(_VIDEO)}, got {codec!r}")
    if rotate % 90:
        raise ValueError(f"rotate must be a multiple of 90, got {rotate}")
    w, h = size
    if w % 2 or h % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    encoder, pix_fmt, audio_encoder, options = _VIDEO[codec]
    if path.suffix.lower() == ".webm":
        audio_encoder = "libopus"  # webm allows only opus or vorbis audio
    n = max(1, round(seconds * fps))
    times = _frame_times(n, fps, vfr)
    end = times[-1] + Fraction(1, fps)
    time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(encoder, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.time_base = time_base
        vs.codec_context.time_base = time_base
        vs.codec_context.gop_size = gop
        vs.codec_context.options = {k: v.format(g=gop) for k, v in options.items()}
        if codec == "vp9":
            vs.codec_context.options |= {"keyint_min": str(gop)}
        if codec == "hevc" and path.suffix.lower() in (".mp4", ".mov"):
            vs.codec_tag = "hvc1"  # what Apple players want; ffmpeg's default hev1 is legal but less common
        if rotate % 360:
            vs.set_display_rotation(-(rotate % 360))
        aus = None
        if audio:
            aus = out.add_stream(audio_encoder, rate=_AUDIO_RATE, layout="stereo")
        for i, t in enumerate(times):
            if scenes:
                img = _fit(scenes[min(int(t * len(scenes) / end), len(scenes) - 1)], size)
            else:
                img = moving_shapes(i, n, size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(t / time_base)
            frame.time_base = time_base
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if aus is not None:
            _write_tone(out, aus, float(end))
    return path


def _write_tone(out: av.container.OutputContainer, aus: av.audio.stream.AudioStream, seconds: float) -> None:
    """A stereo sine whose pitch steps every second: real, non-silent audio for the stream to carry."""
    total = int(seconds * _AUDIO_RATE)
    chunk = aus.codec_context.frame_size or 1024
    for start in range(0, total, chunk):
        k = np.arange(start, min(start + chunk, total))
        freq = 220.0 * (1 + (k // _AUDIO_RATE) % 4)
        wave = (0.2 * np.sin(2 * np.pi * freq * k / _AUDIO_RATE)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, _AUDIO_RATE)
        out.mux(aus.encode(frame))
    out.mux(aus.encode(None))


# --- reading back -------------------------------------------------------------------------------------


@dataclass
class VideoFacts:
    """What PyAV reads back from a video; a test compares it with what ``write_video`` was asked for."""

    codec: str
    size: tuple[int, int]
    rotation: int  # frame.rotation of the first decoded frame: counter-clockwise, -180..180
    frames: int
    keyframes: int  # frames decoded with skip_frame = "NONKEY" (FFmpeg's vp9 decoder ignores it: all frames)
    key_packets: int  # demuxed packets flagged keyframe: the container's view, right for every codec
    pts_seconds: list[float] = field(default_factory=list)
    duration: float = 0.0
    audio_codec: str | None = None


def video_facts(path: Path | str) -> VideoFacts:
    """Decode ``path`` twice with PyAV: every frame (pts, rotation), then keyframes only (the count)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        audio = c.streams.audio[0].codec_context.name if c.streams.audio else None
        pts, rotation = [], 0
        for i, f in enumerate(c.decode(vs)):
            if i == 0:
                rotation = f.rotation
            pts.append(float(f.time))
        facts = VideoFacts(
            codec=vs.codec_context.name,
            size=(vs.codec_context.width, vs.codec_context.height),
            rotation=rotation,
            frames=len(pts),
            keyframes=0,
            key_packets=0,
            pts_seconds=pts,
            duration=float(c.duration / av.time_base) if c.duration else 0.0,
            audio_codec=audio,
        )
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.codec_context.skip_frame = "NONKEY"
        facts.keyframes = sum(1 for _ in c.decode(vs))
    with av.open(str(path)) as c:
        facts.key_packets = sum(1 for p in c.demux(video=0) if p.is_keyframe and p.size)
    return facts
