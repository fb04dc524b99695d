"""Group commit for network intake, and the write and fsyncs that make a stored object durable.

Instances received at the same time (several associations, STOW-RS requests) are recorded in
one catalog transaction: the first thread that finds no commit running becomes the leader,
takes every item queued so far and commits them together; the others wait for the commit of
the batch their item is in. Nobody hears success before its own item is committed, and a batch
that fails is retried item by item, so a bad record fails only its own instance.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from imaging.store import publish_once

__all__ = [
    "CommitStats",
    "GroupCommit",
    "fsync_directory",
    "fsync_file",
    "publish_temp",
    "write_new_object",
    "write_temp",
]

T = TypeVar("T")

_ALIGN = 4096  # O_DIRECT: offsets, lengths and the buffer aligned to the page (covers 512-byte blocks)
_CHUNK = 4 << 20  # bytes per direct write; the aligned buffer of each thread holds one chunk
_buffers = threading.local()
_no_direct: set[int] = set()  # st_dev of filesystems that refused O_DIRECT (tmpfs, some FUSE)


def _aligned_buffer() -> mmap.mmap:
    """This thread's page-aligned buffer (anonymous mmap), reused: fresh pages cost a fault each."""
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = mmap.mmap(-1, _CHUNK)
    return buffer


def _write_direct(fd: int, parts: Sequence[bytes | memoryview]) -> int:
    """Write ``parts`` in order from offset 0 through O_DIRECT, in aligned chunks gathered in
    this thread's buffer; the last chunk is padded with zeros and ``ftruncate`` cuts the file
    back to its size. Returns the size."""
    buffer = _aligned_buffer()
    size = fill = 0
    with memoryview(buffer) as aligned:

        def flush(count: int) -> None:
            padded = -(-count // _ALIGN) * _ALIGN
            aligned[count:padded] = bytes(padded - count)
            written = 0
            while written < padded:  # a short write is legal: continue where it stopped
                written += os.pwrite(fd, aligned[written:padded], size - count + written)

        for part in parts:
            with memoryview(part) as view:
                taken = 0
                while taken < len(view):
                    count = min(_CHUNK - fill, len(view) - taken)
                    aligned[fill : fill + count] = view[taken : taken + count]
                    fill, taken, size = fill + count, taken + count, size + count
                    if fill == _CHUNK:
                        flush(fill)
                        fill = 0
        if fill:
            flush(fill)
    os.ftruncate(fd, size)
    return size


def _write_buffered(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    offset = 0
    for part in parts:
        with memoryview(part) as view:
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], offset + written)
            offset += written


def _open_temp(folder: Path, direct: bool) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    while True:
        temp = folder / f".tmp-{secrets.token_hex(8)}"
        with contextlib.suppress(FileExistsError):
            return os.open(temp, flags, 0o600), temp


def write_temp(folder: Path, parts: Sequence[bytes | memoryview]) -> str:
    """Write the content made of ``parts`` (in order) to a new ``.tmp-*`` file in ``folder``
    and return its path; the caller publishes it (``publish_once``) or removes it. Not flushed.

    Written with O_DIRECT where the filesystem takes it: the bytes go from one reused buffer to
    the disk instead of through fresh page-cache pages (an archive does not read them back
    soon), at a fraction of the CPU, and the later fdatasync has only metadata left to flush.
    Elsewhere (tmpfs, a block size above 4 KiB) it is an ordinary write.
    """
    device = folder.stat().st_dev
    direct = hasattr(os, "O_DIRECT") and device not in _no_direct
    try:
        fd, temp = _open_temp(folder, direct)
    except OSError as exc:
        if not direct or exc.errno != errno.EINVAL:
            raise
        _no_direct.add(device)
        direct = False
        fd, temp = _open_temp(folder, direct)
    try:
        try:
            if direct:
                _write_direct(fd, parts)
            else:
                _write_buffered(fd, parts)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            _no_direct.add(device)  # opened, but the alignment does not suit the device
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            os.ftruncate(fd, 0)
            _write_buffered(fd, parts)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return str(temp)


def publish_temp(temp: str, path: Path) -> None:
    """Put the file ``temp`` (from ``write_temp``, on the same filesystem) at ``path`` by a hard
    link; a file already at ``path`` is kept (content-addressed twins share the first one).
    ``temp`` is gone afterwards, whatever happened."""
    try:
        publish_once(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def write_new_object(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    """Put the content made of ``parts`` (in order) at ``path`` through a ``.tmp-*`` file in
    its (existing) folder (``write_temp``), published by a hard link: a file already at
    ``path`` is kept (content-addressed twins share the first one). Not flushed: the caller
    fsyncs ``path`` and the folder before it reports success."""
    publish_temp(write_temp(path.parent, parts), path)


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
