"""Fault-injection points for the kill tests: the narrow windows where a crash must lose nothing.

``RAMCLI_FAULT=<point>`` makes the process die at that point as ``kill -9`` would (``os._exit(137)``:
no cleanup, no ``finally``), so tests hit a window deterministically instead of by luck. Points:

* ``before-replace``: the write-ahead intent is committed to the index, the file not yet replaced;
* ``after-replace``: the file replaced, its index rows not yet committed;
* ``untag-after-replace``: `untag` replaced a file, the index not yet told.

Unset (always, outside tests) it costs one dictionary lookup per file written.
"""

from __future__ import annotations

import os


def point(name: str) -> None:
    """Die here when ``RAMCLI_FAULT`` names this point."""
    if os.environ.get("RAMCLI_FAULT") == name:
        os._exit(137)
