"""Fault-injection points for the kill tests: the narrow windows where a crash must lose nothing.

``RAMCLI_FAULT=<point>`` makes the process die at that point as ``kill -9`` would (``os._exit(137)``:
no cleanup, no ``finally``), so tests hit a window deterministically instead of by luck. Points:

* ``before-replace``: the write-ahead intent is committed to the index, the file not yet replaced;
* ``after-replace``: the file replaced, its index rows not yet committed;
* ``untag-after-replace``: `untag` replaced a file, the index not yet told;
* ``ray-actor-after-shard`` (with :func:`once`): a Ray inference worker wrote its batch's shard and dies
  (SIGKILL) before handing it back: Ray restarts it and runs the batch again;
* ``ray-driver-second-shard``: `tag --ray` merged one shard into the index and dies before the next.

Unset (always, outside tests) it costs one dictionary lookup per file written.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    """Die here when ``RAMCLI_FAULT`` names this point."""
    if os.environ.get("RAMCLI_FAULT") == name:
        os._exit(137)


def once(name: str) -> None:
    """Kill this process with SIGKILL here when ``RAMCLI_FAULT`` names this point, the first time any process
    reaches it: ``RAMCLI_FAULT_MARK`` names a file created on that first time (a restarted worker, which gets
    the same environment, then goes on)."""
    mark = os.environ.get("RAMCLI_FAULT_MARK")
    if os.environ.get("RAMCLI_FAULT") != name or not mark:
        return
    try:
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
