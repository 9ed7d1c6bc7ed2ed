"""The index side of every file ramcli rewrites: the write-ahead intent, recovery, and exact undo.

Order of a write (``metadata._write`` calls the journal between building and placing the new bytes):

1. the intent is committed to the index (``writes`` row, pending): the new file's sha256, ramcli's
   keywords in it, and the recipe that rebuilds the file as it was before ramcli's *first* write;
2. the file is replaced (atomically, ``metadata.safefile``);
3. the photo's index rows are committed together with settling the intent (:meth:`Journal.settle`).

A kill between any two steps is recovered by the next run (:meth:`Journal.recover`): the file's sha256
says whether step 2 happened. Either way nothing is claimed wrongly, because the file also carries
ramcli's record of what it wrote (``metadata.provenance``): the next run reads it back.

Exact undo (:meth:`Journal.restore`, `ramcli untag`) puts the original bytes back when every file ramcli
wrote for a photo is still exactly as ramcli left it (sha256); otherwise `untag` removes ramcli's fields
instead (metadata-equivalent). The recipe's baseline is the file before ramcli's first write: a later
write composes onto it, and a file someone else changed in between has no exact undo any more.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ramcli import faults
from ramcli.errors import ImageError
from ramcli.files import read_regular
from ramcli.metadata import Intent, safefile, undo

if TYPE_CHECKING:
    from ramcli.index import Index, WriteRow


def _current(target: Path) -> bytes | None:
    """The file's bytes now; None when it does not exist. Raises OSError, or ImageError when something
    other than a regular file (a FIFO) took its place: read through ``open_regular``, never blocking."""
    try:
        return read_regular(target)
    except FileNotFoundError:
        return None


class Journal:
    """Called by the metadata writer before each file replace (``metadata.Journal``)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._unsettled: list[str] = []

    def __call__(self, intent: Intent) -> None:
        from ramcli.index import WriteRow

        target = str(intent.target)
        previous = self.index.write_row(target)
        recipe = None
        if self._known(intent, previous):
            try:
                recipe = undo.delta(self._baseline(intent, previous), intent.new)
            except ValueError:  # a damaged recipe: this file gets the metadata-equivalent undo only
                recipe = None
        row = WriteRow(target, str(intent.photo), recipe, undo.sha256(intent.new), intent.keywords, pending=True)
        with self.index.transaction():
            self.index.begin_write(row, previous)
        self._unsettled.append(target)

    def _known(self, intent: Intent, previous: WriteRow | None) -> bool:
        """Whether the file before ramcli's first write can be rebuilt: ramcli never wrote it (nothing of
        ours in it), or ramcli's last write is what is there now."""
        if previous is not None and previous.recipe is not None and previous.after_sha == undo.sha256(intent.old):
            return True
        return not intent.claimed

    def _baseline(self, intent: Intent, previous: WriteRow | None) -> bytes | None:
        if previous is not None and previous.recipe is not None and previous.after_sha == undo.sha256(intent.old):
            return undo.patch(previous.recipe, intent.old)
        return intent.old

    def settle(self) -> None:
        """Inside the transaction that commits the written photos' rows: their intents are done."""
        if self._unsettled:
            self.index.settle_writes(self._unsettled)
            self._unsettled.clear()

    def recover(self) -> int:
        """Settle or roll back the intents a killed run left; returns how many there were."""
        rows = self.index.pending_writes()
        for row in rows:
            try:
                now = undo.sha256(_current(Path(row.target)))
            except (OSError, ImageError):
                continue  # unreadable now: left pending for a later run
            with self.index.transaction():
                if now == row.after_sha:
                    self.index.settle_writes([row.target])
                elif now == row.prev_after_sha:
                    self.index.revert_write(row)
                else:  # changed by someone else since: no exact undo any more
                    self.index.forget_write(row.target)
        return len(rows)

    def restore(self, photo: Path) -> bool:
        """Put back, byte for byte, every file ramcli wrote for ``photo``; False (nothing touched) unless all
        of them are still exactly as ramcli left them and have a recipe."""
        rows = self.index.writes_of(str(photo))
        if not rows:
            return False
        plan = []
        for row in rows:
            target = Path(row.target)
            before = safefile.state(target)
            try:
                data = _current(target)
            except (OSError, ImageError):
                return False
            if row.recipe is None or undo.sha256(data) != row.after_sha:
                return False
            plan.append((target, before, undo.patch(row.recipe, data)))
        for target, before, original in plan:
            if original is None:
                safefile.remove(target, before, photo, "the sidecar ramcli created")
            else:
                st = target.stat()
                safefile.atomic_write(target, original, before, times=(st.st_atime_ns, st.st_mtime_ns),
                                      new_mode=0o644, path=photo)
            faults.point("untag-after-replace")
        with self.index.transaction():
            for row in rows:
                self.index.forget_write(row.target)
        return True

    def forget(self, photo: Path) -> None:
        """Inside an untag's transaction: nothing of ramcli's is left in ``photo``'s files."""
        for row in self.index.writes_of(str(photo)):
            self.index.forget_write(row.target)
        self._unsettled.clear()

