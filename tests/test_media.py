"""Camera RAW and videos, end to end: real DNGs (pidng) and real encoded videos (PyAV's libx264, libx265,
libvpx-vp9, with rotation, variable frame rate and audio) through LibRaw and FFmpeg, the real CLI, exiftool.

The corpus is written by ``tests/media.py``; nothing here mocks a decoder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from media import write_dng, write_video

from conftest import make_photo, run_cli

MODEL = "tiny_ram_plus"
TAG = ("tag", "--model", MODEL, "--threshold", "0", "--top-k", "3", "--json")


def _halves(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = top
    img[h // 2:] = bottom
    return img


# ---------------------------------------------------------------------------------------------- RAW


def test_raw_preview_is_used_and_turned_upright(tmp_path: Path) -> None:
    from ramcli.runtime.raw import read_raw

    red_top = _halves((640, 480), (220, 30, 30), (30, 30, 220))
    dng = write_dng(tmp_path / "IMG_0001.dng", rgb=red_top, orientation=6, preview=True)  # 6: turn 90 clockwise
    pic = read_raw(dng, min_side=200)
    assert pic.source == "preview"
    assert pic.size == (480, 640)  # upright: portrait
    px = np.asarray(pic.rgb, dtype=np.float32)
    assert px.shape[1] < px.shape[0]
    left, right = px[:, : px.shape[1] // 2].mean((0, 1)), px[:, px.shape[1] // 2:].mean((0, 1))
    assert right[0] > right[2] + 60 and left[2] > left[0] + 60  # the top (red) went to the right
    assert pic.taken_at == "2024-05-17T10:20:30"


def test_raw_without_a_large_preview_is_demosaiced(tmp_path: Path) -> None:
    from ramcli.runtime.raw import read_raw

    img = _halves((640, 480), (220, 30, 30), (30, 30, 220))
    no_preview = write_dng(tmp_path / "a.dng", rgb=img, preview=False)
    pic = read_raw(no_preview, min_side=200)
    assert pic.source == "demosaic" and pic.size == (640, 480)
    px = np.asarray(pic.rgb, dtype=np.float32)
    assert px.shape[:2] == (240, 320)  # half size: one pixel per 2x2 Bayer block
    top, bottom = px[: px.shape[0] // 2].mean((0, 1)), px[px.shape[0] // 2:].mean((0, 1))
    assert top[0] > top[2] + 60 and bottom[2] > bottom[0] + 60
    # a preview smaller than the model's input is not used either
    assert read_raw(write_dng(tmp_path / "b.dng", rgb=img, preview=True), min_side=5000).source == "demosaic"
    assert read_raw(no_preview, prefer="demosaic").source == "demosaic"


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_raw_identity_is_the_sensor_data(tmp_path: Path) -> None:
    """Metadata written into the DNG by another program leaves the hash alone; other sensor data changes it."""
    from ramcli.metadata.identity import image_hash

    dng = write_dng(tmp_path / "a.dng", preview=True)
    before = image_hash(dng)
    subprocess.run(["exiftool", "-q", "-overwrite_original", "-XMP-dc:Subject=edited", "-Artist=someone", str(dng)],
                   check=True)
    assert image_hash(dng) == before
    other = write_dng(tmp_path / "b.dng", rgb=_halves((640, 480), (0, 0, 0), (255, 255, 255)), preview=True)
    assert image_hash(other) != before


def test_a_damaged_raw_is_one_line(tmp_path: Path, tiny_model) -> None:
    root = tmp_path / "lib"
    make_photo(root / "ok.jpg", seed=1)
    bad = root / "DSC_0001.NEF"
    bad.write_bytes(b"II*\x00 not really a raw file" * 10)
    result = run_cli(*TAG, "--index", str(tmp_path / "i.db"), str(root))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "DSC_0001.NEF" in lines[0] and "RAW" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# -------------------------------------------------------------------------------------------- video


def test_keyframes_only_upright_and_spread(tmp_path: Path) -> None:
    from ramcli.runtime.video import sample_video, video_hash

    scene = _halves((320, 240), (220, 30, 30), (30, 30, 220))
    clip = write_video(tmp_path / "clip.mp4", codec="h264", seconds=12, fps=25, gop=25, rotate=90, vfr=True,
                       audio=True, scenes=[scene])
    got = sample_video(clip, every=2.0, most=4)
    assert len(got.frames) == 4
    times = [f.t for f in got.frames]
    assert times == sorted(times) and all(b - a >= 2.0 - 1e-3 for a, b in pairwise(times))
    assert times[-1] > 6  # spread over the clip, not the first four keyframes
    assert got.decoded <= 3 * len(got.frames)  # keyframes near each moment, not every frame (300 here)
    assert got.size == (240, 320)  # a phone held upright: portrait
    px = np.asarray(got.frames[0].rgb, dtype=np.float32)
    right, left = px[:, px.shape[1] // 2:].mean((0, 1)), px[:, : px.shape[1] // 2].mean((0, 1))
    assert right[0] > right[2] + 60 and left[2] > left[0] + 60  # top (red) turned to the right: clockwise
    assert video_hash(clip) == video_hash(clip)
    many = sample_video(clip, every=0.5, most=50)
    assert len(many.frames) == 12  # one keyframe per second: at most one still each


@pytest.mark.parametrize("codec,name", [("hevc", "c.mp4"), ("vp9", "c.webm")])
def test_other_codecs_decode(tmp_path: Path, codec: str, name: str) -> None:
    from ramcli.runtime.video import sample_video

    got = sample_video(write_video(tmp_path / name, codec=codec, seconds=5), every=1.0, most=3)
    assert len(got.frames) == 3 and got.size == (320, 240)


def test_a_truncated_video_is_one_line(tmp_path: Path, tiny_model) -> None:
    root = tmp_path / "lib"
    clip = write_video(root / "whole.mp4", seconds=3)
    cut = root / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])
    result = run_cli(*TAG, "--index", str(tmp_path / "i.db"), str(root))
    assert result.returncode == 1
    recs = {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert recs[str(cut)]["status"] == "error" and recs[str(clip)]["status"] == "tagged"
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cut.mp4" in lines[0] and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------- the library


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A DNG with a preview and its JPEG twin, a DNG without preview, a photo, and videos of three codecs."""
    root = tmp_path / "lib"
    write_dng(root / "IMG_0001.dng", orientation=6, preview=True)
    make_photo(root / "IMG_0001.jpg", seed=2)
    write_dng(root / "IMG_0002.dng", preview=False)
    make_photo(root / "a.jpg", seed=1)
    write_video(root / "phone.mp4", codec="h264", seconds=7, rotate=90, vfr=True, audio=True)
    write_video(root / "hevc.mp4", codec="hevc", seconds=5, audio=True)
    write_video(root / "web.webm", codec="vp9", seconds=5, audio=True)
    return root


def _exif_subjects(path: Path) -> list[str]:
    out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(path)], capture_output=True, text=True,
                         check=True)
    got = json.loads(out.stdout)[0].get("Subject", [])
    return got if isinstance(got, list) else [got]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_tag_raw_and_videos_and_search_them(tmp_path: Path, library: Path, tiny_model) -> None:
    db = str(tmp_path / "i.db")
    result = run_cli(*TAG, "--index", db, str(library))
    assert result.returncode == 0, result.stderr
    recs = {Path(r["path"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(recs) == {"IMG_0001.dng", "IMG_0001.jpg", "IMG_0002.dng", "a.jpg", "phone.mp4", "hevc.mp4",
                         "web.webm"}
    assert all(r["status"] == "tagged" and len(r["tags"]) == 3 for r in recs.values())
    assert "7 tagged (3 videos)" in result.stderr
    # where each one's keywords went, read back by exiftool
    sidecars = {"IMG_0001.dng": "IMG_0001.xmp", "IMG_0002.dng": "IMG_0002.xmp", "phone.mp4": "phone.mp4.xmp",
                "hevc.mp4": "hevc.mp4.xmp", "web.webm": "web.webm.xmp"}
    for name, side in sidecars.items():
        assert sorted(_exif_subjects(library / side)) == sorted(recs[name]["tags"]), name
    # the RAW+JPEG pair: the JPEG keeps its own keywords, embedded; no sidecar collides
    assert sorted(_exif_subjects(library / "IMG_0001.jpg")) == sorted(recs["IMG_0001.jpg"]["tags"])
    assert not (library / "IMG_0001.jpg.xmp").exists()
    # search finds the videos, each at a moment
    tag = recs["phone.mp4"]["tags"][0]
    found = run_cli("search", tag, "--index", db, "--json", "--limit", "50")
    assert found.returncode == 0, found.stderr
    hits = {Path(h["path"]).name: h for h in map(json.loads, found.stdout.splitlines())}
    assert hits["phone.mp4"]["at"] is not None and 0 <= hits["phone.mp4"]["at"] <= 7
    assert hits["a.jpg"]["at"] is None if "a.jpg" in hits else True
    table = run_cli("search", tag, "--index", db)
    assert "phone.mp4 at 00:00:0" in table.stdout.replace("\n", " ").replace("│", " ") or "at 00:00:0" in table.stdout
    like = run_cli("search", "--like", f"{library / 'phone.mp4'}@3", "--index", db, "--json")
    top = json.loads(like.stdout.splitlines()[0])
    assert Path(top["path"]).name == "phone.mp4" and top["at"] is not None and abs(top["at"] - 3) <= 1.5
    # nothing changed: nothing read again; videos counted apart
    again = run_cli(*TAG, "--index", db, str(library))
    assert {r["status"] for r in map(json.loads, again.stdout.splitlines())} == {"unchanged"}
    assert "7 unchanged (3 videos)" in again.stderr
    # untag takes every sidecar ramcli made away again
    gone = run_cli("untag", "--index", db, str(library))
    assert gone.returncode == 0, gone.stderr
    assert sorted(p.name for p in library.glob("*.xmp")) == []


def test_only_and_exclude_videos(tmp_path: Path, library: Path, tiny_model) -> None:
    only = run_cli(*TAG, "--dry-run", "--only-videos", str(library))
    assert only.returncode == 0, only.stderr
    assert {Path(json.loads(x)["path"]).suffix for x in only.stdout.splitlines()} == {".mp4", ".webm"}
    rest = run_cli(*TAG, "--dry-run", "--exclude-videos", str(library))
    assert {Path(json.loads(x)["path"]).suffix for x in rest.stdout.splitlines()} == {".dng", ".jpg"}
    both = run_cli(*TAG, "--dry-run", "--only-videos", "--exclude-videos", str(library))
    assert both.returncode == 2 and "exclude each other" in both.stderr


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_a_lightroom_sidecar_of_a_raw_keeps_its_settings(tmp_path: Path, tiny_model) -> None:
    """Lightroom's IMG_0001.xmp (develop settings, the user's keyword): ours are added, nothing else moves."""
    root = tmp_path / "lib"
    write_dng(root / "IMG_0001.dng", preview=True)
    side = root / "IMG_0001.xmp"
    side.write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '   crs:Version="15.0" crs:Exposure2012="+0.35" crs:Temperature="5150" crs:HasSettings="True">\n'
        '   <dc:subject>\n    <rdf:Bag>\n     <rdf:li>holiday</rdf:li>\n    </rdf:Bag>\n   </dc:subject>\n'
        '  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n', encoding="utf-8")
    result = run_cli(*TAG, "--index", str(tmp_path / "i.db"), str(root))
    assert result.returncode == 0, result.stderr
    tags = json.loads(result.stdout.splitlines()[0])["tags"]
    out = subprocess.run(["exiftool", "-j", "-XMP-crs:all", "-XMP-dc:Subject", str(side)], capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout)[0]
    assert got["Exposure2012"] in (0.35, "+0.35") and got["ColorTemperature"] == 5150 and got["Version"] == 15.0
    assert sorted(got["Subject"]) == sorted(["holiday", *tags])
    assert 'crs:Exposure2012="+0.35"' in side.read_text(encoding="utf-8")
    assert not (root / "IMG_0001.dng.xmp").exists()


def test_add_tag_scores_a_video_by_its_best_still(tmp_path: Path, tiny_model, clip_model) -> None:
    """Custom tags re-scored from the stored tokens give a video what a full run gives it: each still on its
    own, the video the best of them per tag (not the still that was best for the other tags)."""
    import sqlite3

    from media import moving_shapes, photo_rgb

    from ramcli.runtime.video import sample_video

    root = tmp_path / "lib"
    scenes = [photo_rgb((320, 240)), moving_shapes(0, 1, (320, 240)), 255 - photo_rgb((320, 240))]
    clip = write_video(root / "v.mp4", seconds=9, scenes=scenes)
    idx = ("--index", str(tmp_path / "i.db"))
    names = ["lighthouse", "harbour", "kite", "forest", "snow"]
    assert run_cli("tag", "-m", MODEL, *idx, str(root)).returncode == 0
    for name in names:
        assert run_cli("add-tag", name, "--threshold", "0.001", *idx).returncode == 0
    db = sqlite3.connect(tmp_path / "i.db")
    stored = dict(db.execute("select t.tag, t.score from image_tags t join photos p on p.hash = t.hash"))
    # which still the video's own row (tokens, CLS) came from: the best one for the built-in tags
    own = db.execute("select cls from images").fetchone()[0]
    best = next(k for k, (cls,) in enumerate(db.execute("select cls from stills order by idx")) if cls == own)
    full = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", MODEL, *idx, str(clip))
    assert full.returncode == 0, full.stderr
    fresh = {t["name"]: t["score"] for t in json.loads(full.stdout)["tags"]}
    # the stills as photos (lossless), scored by a full run each: the video's scores are their maxima
    stills = tmp_path / "stills"
    stills.mkdir()
    for k, frame in enumerate(sample_video(clip).frames):
        frame.rgb.save(stills / f"s{k}.png")
    each = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", MODEL, *idx, str(stills))
    per_still = [{t["name"]: t["score"] for t in json.loads(line)["tags"]} for line in each.stdout.splitlines()]
    assert len(per_still) == 5
    for name in names:
        assert fresh[name] == pytest.approx(max(s[name] for s in per_still), abs=1e-5), name
        assert stored[name] == pytest.approx(fresh[name], abs=2e-3), name  # stored tokens are float16
    assert stored == {**stored, **{n: pytest.approx(max(s[n] for s in per_still), abs=2e-3) for n in names}}
    assert 0 <= best < 5


def test_stored_scores_take_each_tags_best_still(tmp_path: Path, tiny_model) -> None:
    """The re-scoring kernel on a real index and engine: a video with stills of different tokens gets, per tag,
    the maximum of its stills' scores, each computed on its own; a photo gets its own."""
    from ramcli.index import ImageRecord, open_index
    from ramcli.pipeline.rescore import stored_scores
    from ramcli.runtime.engine import Engine
    from ramcli.runtime.images import parity_images
    from ramcli.runtime.tagging import sigmoid
    from ramcli.runtime.vocabulary import Vocabulary

    engine = Engine(tiny_model)
    vocab = Vocabulary.builtin(tiny_model)
    embeds = engine.encode(parity_images(tiny_model.preprocess, 4)).astype(np.float16)  # 4 different pictures
    index = open_index(tmp_path / "i.db", writer=True)
    with index.transaction():
        index.put_image(ImageRecord("video", MODEL, 320, 240, None, embeds[0][0].astype(np.float32), embeds[0], [],
                                    duration=6.0, stills=[(2.0 * k, embeds[k][0].astype(np.float32), embeds[k], [])
                                                          for k in range(3)]))
        index.put_image(ImageRecord("photo", MODEL, 320, 240, None, embeds[3][0].astype(np.float32), embeds[3], []))
    got = stored_scores(index, MODEL, engine, vocab, [("video", embeds[0], embeds[0][0].astype(np.float32)),
                                                       ("photo", embeds[3], embeds[3][0].astype(np.float32))])
    one = [sigmoid(engine.logits(embeds[k][None], vocab.tag_embeds(embeds[k][0][None, None].astype(np.float32))))[0]
           for k in range(4)]
    assert np.allclose(got[0], np.max(one[:3], axis=0), atol=1e-6)
    assert np.allclose(got[1], one[3], atol=1e-6)
    assert np.abs(np.max(one[:3], axis=0) - one[0]).max() > 1e-3  # the first still alone would be wrong
    index.close()


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
def test_moved_and_deleted_leave_no_keyword_of_ours_behind(tmp_path: Path, tiny_model) -> None:
    """A video moved without its sidecar, and a RAW deleted: the sidecars left behind lose ramcli's keywords
    (a sidecar only ramcli wrote goes; another app's keeps its data), as embedded keywords go with a file."""
    root = tmp_path / "lib"
    clip = write_video(root / "clip.mp4", seconds=3)
    write_dng(root / "IMG_0001.dng", preview=True)
    write_dng(root / "IMG_0002.dng", rgb=_halves((640, 480), (200, 0, 0), (0, 0, 200)), preview=True)
    lightroom = root / "IMG_0002.xmp"
    lightroom.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
                         '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:crs="http://ns.adobe.com/'
                         'camera-raw-settings/1.0/" crs:Exposure2012="+0.35"/></rdf:RDF></x:xmpmeta>\n',
                         encoding="utf-8")
    db = ("--index", str(tmp_path / "i.db"))
    first = run_cli(*TAG, *db, str(root))
    assert first.returncode == 0, first.stderr
    assert _exif_subjects(root / "IMG_0002.xmp") and _exif_subjects(root / "clip.mp4.xmp")
    (root / "sub").mkdir()
    clip.rename(root / "sub" / "holiday.mp4")  # its sidecar stays behind
    (root / "IMG_0001.dng").unlink()
    (root / "IMG_0002.dng").unlink()
    again = run_cli(*TAG, *db, str(root))
    assert again.returncode == 0, again.stderr
    statuses = {Path(r["path"]).name: r["status"] for r in map(json.loads, again.stdout.splitlines())}
    assert statuses == {"holiday.mp4": "moved", "IMG_0001.dng": "pruned", "IMG_0002.dng": "pruned"}
    assert _exif_subjects(root / "sub" / "holiday.mp4.xmp")  # the keywords moved with the video
    assert not (root / "clip.mp4.xmp").exists() and not (root / "IMG_0001.xmp").exists()
    assert lightroom.exists() and _exif_subjects(lightroom) == []
    assert 'crs:Exposure2012="+0.35"' in lightroom.read_text(encoding="utf-8")
    assert "ramcli" not in lightroom.read_text(encoding="utf-8")


def test_agreement_samples_take_a_videos_stills(tmp_path: Path, tiny_model) -> None:
    """`models verify --photos` / `models quantize` sample what the model sees: a video gives its stills."""
    from ramcli.pipeline.samples import sample_inputs

    write_video(tmp_path / "v" / "clip.mp4", seconds=7)
    got = sample_inputs(tiny_model, tmp_path / "v", 3)
    size = tiny_model.preprocess.image_size
    assert got is not None and got.shape == (3, 3, size, size)
    assert np.abs(got[0] - got[2]).mean() > 0.01  # different moments


def test_a_video_ranks_by_the_still_that_matches(tmp_path: Path, tiny_model) -> None:
    """`--like` a picture of one moment of a video: the video matches as that moment does (cosine 1 with the
    same still), not as the still that was best for its tags; the hit says that moment."""
    import sqlite3

    from media import moving_shapes, photo_rgb

    from ramcli.runtime.video import sample_video

    root = tmp_path / "lib"
    scenes = [photo_rgb((320, 240)), moving_shapes(0, 1, (320, 240)), 255 - photo_rgb((320, 240))]
    clip = write_video(root / "v.mp4", seconds=9, scenes=scenes)
    make_photo(root / "p.jpg", seed=5)
    idx = ("--index", str(tmp_path / "i.db"))
    assert run_cli("tag", "-m", MODEL, *idx, str(root)).returncode == 0
    db = sqlite3.connect(tmp_path / "i.db")
    own = db.execute("select cls from images where duration is not null").fetchone()[0]
    stills = db.execute("select idx, t, cls from stills order by idx").fetchall()
    other = next((k, t) for k, t, cls in stills if cls != own and abs(t - stills[0][1]) > 2.5)  # another scene
    frame = next(f for f in sample_video(clip).frames if abs(f.t - other[1]) < 1e-3)
    frame.rgb.save(tmp_path / "moment.png")  # lossless: the model sees exactly that still
    res = run_cli("search", "--like", str(tmp_path / "moment.png"), "-m", MODEL, *idx, "--json")
    assert res.returncode == 0, res.stderr
    top = json.loads(res.stdout.splitlines()[0])
    assert Path(top["path"]).name == "v.mp4" and top["score"] > 0.9999 and top["at"] == pytest.approx(other[1])
