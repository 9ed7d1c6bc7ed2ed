"""Preprocessing: identical to the reference transform, plus EXIF orientation; clear errors.

The reference transform is torchvision's Resize((S, S)) + ToTensor + Normalize on
``Image.convert("RGB")``; torchvision is installed with ramcli (conversion needs it), so it is
used here as the independent implementation to compare against, bit for bit.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_photo
from ramcli.errors import ImageError
from ramcli.runtime.images import Preprocess, load_input, open_rgb, to_input

PRE = Preprocess()


def reference(path: Path) -> np.ndarray:
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize((384, 384)), transforms.ToTensor(),
                             transforms.Normalize(mean=PRE.mean, std=PRE.std)])
    with Image.open(path) as img:
        return tf(img.convert("RGB")).numpy()


@pytest.mark.parametrize(
    ("name", "mode", "size", "save"),
    [
        ("rgb.jpg", "RGB", (640, 428), {"quality": 90}),
        ("rgba.png", "RGBA", (320, 240), {}),
        ("gray.jpg", "L", (500, 375), {}),
        ("palette.png", "P", (300, 200), {}),
        ("cmyk.jpg", "CMYK", (256, 256), {}),
        ("tiny.png", "RGB", (1, 1), {}),
        ("panorama.jpg", "RGB", (2400, 300), {}),
        ("tall.webp", "RGB", (200, 1500), {"lossless": True}),
        ("la.png", "LA", (100, 80), {}),
        ("bilevel.tif", "1", (64, 64), {}),
    ],
)
def test_matches_reference_transform(tmp_path: Path, name: str, mode: str, size: tuple[int, int], save: dict) -> None:
    path = make_photo(tmp_path / name, size, mode, **save)
    ours, wh = load_input(path, PRE)
    assert ours.dtype == np.float32 and ours.shape == (3, 384, 384)
    assert wh == size
    np.testing.assert_array_equal(ours, reference(path))


def test_sixteen_bit_png(tmp_path: Path) -> None:
    px = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(px).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    np.testing.assert_array_equal(load_input(path, PRE)[0], reference(path))


def test_golden_input_bit_exact(shared: Path) -> None:
    ours, _ = load_input(shared / "golden" / "images" / "demo4.jpg", PRE, orient=False)
    np.testing.assert_array_equal(ours[None], np.load(shared / "golden" / "ram_plus_tiny" / "inputs.npy"))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    """A camera JPEG stored sideways is fed to the model upright (the reference does not do this)."""
    upright = make_photo(tmp_path / "upright.png", (300, 200))
    with Image.open(upright) as img:
        inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
        stored = img.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=exif)
    img = open_rgb(path)
    assert img.size == (300, 200)
    with Image.open(upright) as want:
        np.testing.assert_array_equal(np.asarray(img), np.asarray(want.convert("RGB")))
    assert open_rgb(path, orient=False).size == stored.size


def test_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert open_rgb(path).getpixel((5, 5))[0] > 200


def test_heic_when_supported(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    src = make_photo(tmp_path / "src.png", (128, 96))
    path = tmp_path / "photo.heic"
    try:
        with Image.open(src) as img:
            pillow_heif.from_pillow(img).save(path, quality=90)
    except Exception as exc:  # encoder missing from this wheel
        pytest.skip(f"HEIC encoder unavailable: {exc}")
    assert open_rgb(path).size == (128, 96)


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not a photo\n" * 10, "not an image"),
        ("truncated.jpg", None, "truncated"),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path: Path, name: str, content: bytes | None, fragment: str) -> None:
    path = tmp_path / name
    if content is None:
        good = make_photo(tmp_path / "good.jpg", (400, 300)).read_bytes()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError) as exc:
        load_input(path, PRE)
    text = str(exc.value)
    assert text.startswith(str(path)) and "\n" not in text
    assert fragment in text or "cannot decode" in text


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 MP, tiny on disk
    path.write_bytes(buf.getvalue())
    with pytest.raises(ImageError, match="decompression bomb"):
        load_input(path, PRE)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="vanished"):
        load_input(tmp_path / "gone.jpg", PRE)


def test_to_input_normalisation_formula() -> None:
    """(x/255 - mean)/std per channel, CHW: checked on a constant image by hand."""
    img = Image.new("RGB", (10, 10), (255, 0, 128))
    x = to_input(img, PRE)
    expect = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(x[:, 0, 0], expect, rtol=1e-6)


def test_draft_decoding_scales_jpegs_down_but_never_below_the_input_size(tmp_path: Path) -> None:
    """--decode draft: the JPEG decoder scales by 1/2..1/8 first; sizes stay those of the photo."""
    from dataclasses import replace

    from ramcli.runtime.images import read_photo

    big = make_photo(tmp_path / "big.jpg", (3200, 1800), seed=4, quality=92)
    photo = read_photo(big, draft=384)
    assert photo.size == (3200, 1800)  # what the index records: the photo, not the decode
    assert photo.rgb.size == (800, 450)  # 1/4: 1/8 would give 400 x 225, below 384
    exact, size = load_input(big, PRE)
    drafted, dsize = load_input(big, replace(PRE, draft=True))
    assert size == dsize == (3200, 1800)
    diff = np.abs(exact - drafted)
    assert 0 < diff.mean() < 0.05  # a different decode, of the same picture

    png = make_photo(tmp_path / "big.png", (1600, 1200), seed=4)
    np.testing.assert_array_equal(load_input(png, replace(PRE, draft=True))[0], load_input(png, PRE)[0])

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    with Image.open(big) as img:
        img.save(tmp_path / "turned.jpg", exif=exif, quality=92)
    turned = read_photo(tmp_path / "turned.jpg", draft=384)
    assert turned.size == (1800, 3200) and turned.rgb.size == (450, 800)
