"""Exact undo: a small recipe that rebuilds a file as it was before ramcli's write, from the file now.

ramcli's write changes a few metadata segments/chunks and leaves the picture bytes alone (checked by
``imagedata``), so the file before is the file after with a few ranges swapped back. A recipe is a list
of operations over the *new* bytes: copy ``length`` bytes from ``offset``, or insert literal bytes.
It is built by cutting the old file into blocks and finding each block in the new one: first where the
previous block's match suggests (a metadata edit shifts what follows by a constant), then anywhere.
No format parsing is needed, so JPEG, PNG, WebP, TIFF and sidecars all work the same way; the recipe is
verified against the old bytes before it is kept, so a recipe that would not rebuild the file exactly
is never stored.

``ABSENT`` is the recipe of a file that did not exist before (a sidecar ramcli created): undoing it
deletes the file.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

ABSENT = b"absent"
_MAGIC = b"RU1"
_BLOCK = 4096
# A recipe whose literal bytes pass this is not kept: the write changed far more than metadata, and
# the index should not hold copies of photos (the undo then removes ramcli's fields instead).
MAX_LITERAL = 4 << 20


def sha256(data: bytes | None) -> str:
    """The hash that identifies a file's state; ``"absent"`` for a file that does not exist."""
    return "absent" if data is None else hashlib.sha256(data).hexdigest()


def delta(old: bytes | None, new: bytes | None) -> bytes | None:
    """A recipe rebuilding ``old`` from ``new`` (None: not worth keeping, or ``new`` is gone)."""
    if old is None:
        return ABSENT
    if new is None:
        return None
    ops: list[tuple[int, int] | bytes] = []
    literal = 0
    expect = 0
    for i in range(0, len(old), _BLOCK):
        block = old[i:i + _BLOCK]
        at = expect if new[expect:expect + len(block)] == block else new.find(block)
        if at < 0:
            literal += len(block)
            if literal > MAX_LITERAL:
                return None
            if ops and isinstance(ops[-1], bytes):
                ops[-1] += block
            else:
                ops.append(block)
            continue
        last = ops[-1] if ops else None
        if isinstance(last, tuple) and last[0] + last[1] == at:
            ops[-1] = (last[0], last[1] + len(block))
        else:
            ops.append((at, len(block)))
        expect = at + len(block)
    recipe = _MAGIC + zlib.compress(b"".join(_encode(op) for op in ops), 6)
    return recipe if patch(recipe, new) == old else None


def patch(recipe: bytes, new: bytes | None) -> bytes | None:
    """The old file: ``recipe`` applied to ``new``; None when the old file did not exist."""
    if recipe == ABSENT:
        return None
    if not recipe.startswith(_MAGIC) or new is None:
        raise ValueError("not an undo recipe")
    raw = zlib.decompress(recipe[len(_MAGIC):])
    out = bytearray()
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            offset, length = struct.unpack_from("<QQ", raw, i + 1)
            out += new[offset:offset + length]
            i += 17
        else:
            (length,) = struct.unpack_from("<Q", raw, i + 1)
            out += raw[i + 9:i + 9 + length]
            i += 9 + length
    return bytes(out)


def _encode(op: tuple[int, int] | bytes) -> bytes:
    if isinstance(op, tuple):
        return b"\x00" + struct.pack("<QQ", *op)
    return b"\x01" + struct.pack("<Q", len(op)) + op
