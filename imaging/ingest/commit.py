"""Group commit for network intake, and the fsyncs that make a stored object durable.

Instances received at the same time (several associations, STOW-RS requests) are recorded in
one catalog transaction: the first thread that finds no commit running becomes the leader,
takes every item queued so far and commits them together; the others wait for the commit of
the batch their item is in. Nobody hears success before its own item is committed, and a batch
that fails is retried item by item, so a bad record fails only its own instance.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["CommitStats", "GroupCommit", "fsync_directory", "fsync_file"]

T = TypeVar("T")


def fsync_file(path: Path) -> None:
    """Flush a written file's data and size to the disk (Linux: a read-only fd suffices).
    fdatasync: the metadata needed to read the data back (its size) is flushed too; only
    timestamps are not."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make the entries of ``path`` (a rename, a new file or folder in it) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class CommitStats:
    """Batches committed and items in them (for the benchmark and the logs; no identifiers)."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    retried_batches: int = 0

    def as_dict(self) -> dict[str, float | int]:
        mean = self.items / self.batches if self.batches else 0.0
        return {
            "batches": self.batches,
            "items": self.items,
            "largest": self.largest,
            "mean": round(mean, 2),
            "retried_batches": self.retried_batches,
        }


@dataclass
class _Ticket(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


@dataclass
class GroupCommit(Generic[T]):
    """``submit(item)`` returns once ``commit`` has durably taken a batch holding ``item``.

    ``commit`` receives a list of items and must be all-or-nothing (one transaction).
    """

    commit: Callable[[list[T]], object]
    max_batch: int = 256
    stats: CommitStats = field(default_factory=CommitStats)
    _queue: list[_Ticket[T]] = field(default_factory=list, repr=False)
    _busy: bool = field(default=False, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def submit(self, item: T) -> None:
        """Raises what ``commit`` raised for this item (after an item-by-item retry)."""
        ticket: _Ticket[T] = _Ticket(item)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    for done in batch:
                        done.done = True
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error

    def _run(self, batch: list[_Ticket[T]]) -> None:
        try:
            self.commit([t.item for t in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                self.stats.retried_batches += 1
                for ticket in batch:  # isolate the item(s) that cannot be committed
                    try:
                        self.commit([ticket.item])
                    except Exception as single:
                        ticket.error = single
        except BaseException as exc:  # KeyboardInterrupt and the like: nobody in it succeeded
            for ticket in batch:
                ticket.error = exc
            raise
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
