"""The JPEG segment walk shared by the metadata write check and the image hash (pipeline.identity).

Hand-built byte strings pin each consumer's verdict on odd files: the image hash must keep its values
(index files depend on them), the write check must keep refusing what it refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_metadata import make_photo

from ramcli.errors import ImageError
from ramcli.metadata import write_keywords
from ramcli.metadata.identity import image_hash
from ramcli.metadata.imagedata import Segment, jpeg_image_data, jpeg_scan_offset, jpeg_segments

SOI = b"\xff\xd8"
APP1 = b"\xff\xe1\x00\x04ab"  # a metadata segment
DQT = b"\xff\xdb\x00\x03q"  # a table: part of the picture
SCAN = b"\xff\xda\x00\x02scan"


def test_segments_are_walked_by_their_lengths_up_to_the_first_sos() -> None:
    data = SOI + APP1 + b"\xff" + DQT + b"\xff\xd0" + SCAN + b"\xff\xda"
    got = list(jpeg_segments(io.BytesIO(data)))
    assert got == [Segment(0xE1, 2, 4), Segment(0xDB, 9, 3), Segment(0xD0, 14, None), Segment(0xDA, 16, None)]
    assert got[0].metadata and not got[1].metadata and got[1].end == 14  # a fill byte before DQT
    assert jpeg_scan_offset(io.BytesIO(data)) == 16
    assert jpeg_image_data(data, Path("x.jpg")) == DQT + data[16:]


@pytest.mark.parametrize(("data", "offset", "error"), [
    (b"GIF89a", None, "not a JPEG"),
    (SOI + APP1, None, "no image data"),  # ends before any SOS
    (SOI + b"\xff\xe1\x00\x40ab" + SCAN, None, "no image data"),  # a length past the end
    (SOI + b"\x00" + SCAN, None, "no image data"),  # not a marker where one should be
    (SOI + b"\xff\xe1\x00\x01" + SCAN, None, "no image data"),  # a length below 2
    (SOI + b"\xff\xda", 2, "no image data"),  # an SOS without even a header: hashed, refused for writing
    (SOI + b"\xff\xda\x00", 2, "no image data"),
    (SOI + b"\xff\xda\x00\x02", 2, None),
])
def test_each_consumer_judges_odd_segments_as_before(data: bytes, offset: int | None, error: str | None) -> None:
    assert jpeg_scan_offset(io.BytesIO(data)) == offset
    if error is None:
        assert jpeg_image_data(data, Path("x.jpg")).endswith(data[-4:])
    else:
        with pytest.raises(ImageError, match=error):
            jpeg_image_data(data, Path("x.jpg"))


def test_image_hash_is_blind_to_a_metadata_write(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "p.jpg")
    before = image_hash(photo)
    write_keywords(photo, ["dog"], [], caption="a dog")
    assert image_hash(photo) == before
    with open(photo, "rb") as f:
        offset = jpeg_scan_offset(f)
    assert offset is not None and photo.read_bytes()[offset:offset + 2] == b"\xff\xda"
