"""The receive spool: C-STORE acknowledged once the input is durable, de-identified after.

With ``dicom.acknowledge: received`` the SCP seals each received data set under the gateway's
own spool key (AES-256-GCM, ``governance.keyring`` purpose ``gateway-spool``), writes it into a
slot file made ahead in a durable batch, fsyncs it, and only then answers success. A separate, lower-priority
drainer process takes entries oldest first, runs them through the same ingest path as every
other input (validate, de-identify, screen pixels, store, catalog) and removes an entry only
after its outcome is committed. This is store-and-forward, as a PACS or RSNA's CTP does: the
sender is released at disk speed, de-identification keeps pace on the remaining CPU.

Guarantees:

* nothing acknowledged is lost: an entry exists (sealed, fsynced) before the success status
  leaves, and is removed only after the catalog commit; a crash in between leaves the entry,
  which the next drainer ingests again, and the ingest path's idempotency by input hash makes
  that a duplicate, never a second output;
* bounded: over ``max_bytes`` or ``max_files`` the SCP ingests in the association's thread
  instead (the sender is slowed to de-identification speed, never refused for it);
* entries are claimed with an exclusive ``flock``, so any number of drainers (processes) can
  share one spool, and a drainer that dies releases its claim;
* PHI at rest only sealed; no log line carries anything of an entry but its size.

What changes for the sender: success means "durably received", as with a PACS. Instances the
ingest quarantines later are reported in the catalog and the quarantine report, not in the
C-STORE status (``acknowledge: committed``, the default, answers after the commit).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imaging.ingest.commit import fsync_directory

if TYPE_CHECKING:
    from governance.keyring import StoreKey
    from imaging.gateway.sink import Sink

__all__ = ["Spool", "SpoolDrainer", "SpoolEntry", "SpoolError"]

LOGGER = logging.getLogger(__name__)
_RECORD = "gateway-spool"
_SUFFIX = ".spool"
#: An entry: magic, the sha256 of the data set (bound into the seal too), the sealed length,
#: then the sealed bytes (source line + data set). A slot shorter than its header says was cut
#: short by a crash before the answer left, and is removed.
_MAGIC = b"RGS1"
_HEADER = len(_MAGIC) + 32 + 8
#: Empty slot files made at once, with one folder fsync for all of them: acknowledging an
#: instance then costs one file fsync (filling a slot that is already durable), not a file
#: fsync plus a folder fsync for a new name.
_SLOT_BATCH = 32
#: How long the spool's size may be taken from the last listing (a listing per C-STORE would
#: cost more than the write on a deep spool); the limits are exact to within that window.
_DEPTH_REFRESH_S = 0.5


class SpoolError(RuntimeError):
    """An entry cannot be read back (tampered, wrong key, truncated)."""


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    digest: str  # sha256 (hex) of the received data set
    source: str  # c-store:AE@host


class Spool:
    """A folder of slot files: empty ones made ahead in durable batches, filled (under an
    exclusive lock, then fsynced) one per received instance, emptied by the drainers."""

    def __init__(self, directory: Path, key: StoreKey, *, max_bytes: int, max_files: int) -> None:
        self.directory = directory
        self.key = key
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._depth: tuple[int, int] = (0, 0)  # filled slots, bytes at the last listing (+ ours)
        self._listed_at = float("-inf")
        self._slots: list[Path] = []  # empty, durable, made by this process (oldest last)
        self._slots_pid = 0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- writing (the SCP) -------------------------------------------------------------------

    def put(self, data: bytes, digest: str, source: str) -> bool:
        """Seal and durably write one received data set; False (nothing written) when the
        spool is full. Returns only after the data is fsynced into a durable slot."""
        if "\n" in source:
            raise ValueError("a spool source is one line")
        sealed = self.key.seal(source.encode() + b"\n" + data, digest.encode(), record=_RECORD)
        with self._lock:
            files, size = self.depth()
            if files + 1 > self.max_files or size + len(sealed) > self.max_bytes:
                return False
            self._depth = (files + 1, size + len(sealed))
            slot = self._take_slot()
        fd = os.open(slot, os.O_WRONLY)
        try:
            # Held while filling: a drainer that opened the empty slot skips it until it is whole.
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = _MAGIC + bytes.fromhex(digest) + len(sealed).to_bytes(8, "big") + sealed
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, 0)  # not acknowledged: back to an empty slot
            raise
        finally:
            os.close(fd)  # releases the lock
        return True

    def _take_slot(self) -> Path:
        """An empty slot of this process (a fork starts its own batches: names carry the pid)."""
        if self._slots_pid != os.getpid():
            self._slots, self._slots_pid = [], os.getpid()
        if not self._slots:
            stamp = f"{time.time_ns():020d}-{os.getpid()}"
            made = [self.directory / f"{stamp}-{n:04d}{_SUFFIX}" for n in range(_SLOT_BATCH)]
            for path in made:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            fsync_directory(self.directory)
            self._slots = made[::-1]
        return self._slots.pop()

    def depth(self, *, fresh: bool = False) -> tuple[int, int]:
        """(filled slots, bytes) in the spool, from a listing at most ``_DEPTH_REFRESH_S`` old."""
        now = time.monotonic()
        if fresh or now - self._listed_at > _DEPTH_REFRESH_S:
            sizes = [size for _, size in self._filled()]
            self._depth, self._listed_at = (len(sizes), sum(sizes)), now
        return self._depth

    def _filled(self) -> Iterator[tuple[Path, int]]:
        """(path, size) of each filled slot (empty ones are made ahead, not entries)."""
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if not entry.name.endswith(_SUFFIX):
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:  # drained meanwhile
                    continue
                if size:
                    yield Path(entry.path), size

    def remove_incomplete(self) -> int:
        """Remove empty slots and fills a crash cut short (never acknowledged: the sender
        retries). Call only while no SCP of this spool runs."""
        removed = 0
        for path in self.directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                length = path.stat().st_size
                if length == 0 or not _whole(path, length):
                    path.unlink()
                    removed += 1
        if removed:
            fsync_directory(self.directory)
        return removed

    # -- reading (the drainer) ---------------------------------------------------------------

    def pending(self) -> list[Path]:
        """Filled slots, oldest first (names start with the time their batch was made)."""
        return sorted(path for path, _ in self._filled())

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[tuple[SpoolEntry, bytes] | None]:
        """Hold ``path`` exclusively: yields (entry, data), or None when it is being filled,
        held by another drainer, or gone. The slot is removed if the block finishes without an
        exception."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as handle:
                raw = handle.read()
            if not raw or not path.exists():  # still empty, or drained just before our lock
                yield None
                return
            digest, sealed = self._open_record(path, raw)
            try:
                plain = self.key.unseal(sealed, digest.encode(), record=_RECORD)
            except Exception as exc:
                raise self._set_aside(path, len(raw), type(exc).__name__) from exc
            source, _, data = plain.partition(b"\n")
            yield SpoolEntry(path, digest, source.decode()), data
            # Not fsynced: should the removal be lost in a crash, the entry is ingested again
            # and the ingest path's idempotency by input hash makes it a duplicate.
            path.unlink()
        finally:
            os.close(fd)  # releases the lock

    def _open_record(self, path: Path, raw: bytes) -> tuple[str, bytes]:
        length = _sealed_length(raw)
        if length is None:
            raise self._set_aside(path, len(raw), "no spool header")
        if len(raw) != _HEADER + length:
            raise self._set_aside(path, len(raw), "length differs from its header")
        return raw[len(_MAGIC) : len(_MAGIC) + 32].hex(), raw[_HEADER:]

    def _set_aside(self, path: Path, size: int, why: str) -> SpoolError:
        """Move an unreadable entry out of the way of those behind it, for the operator (a key
        rotated away, a damaged disk): never deleted."""
        aside = self.directory / "unreadable"
        aside.mkdir(exist_ok=True, mode=0o700)
        os.replace(path, aside / path.name)
        fsync_directory(self.directory)
        return SpoolError(f"a spool entry of {size} bytes cannot be read ({why}): moved to {aside}")


def _sealed_length(record: bytes) -> int | None:
    """The sealed length a record's header declares, or None without a whole header."""
    if len(record) < _HEADER or record[: len(_MAGIC)] != _MAGIC:
        return None
    return int.from_bytes(record[_HEADER - 8 : _HEADER], "big")


def _whole(path: Path, length: int) -> bool:
    """Whether a filled slot holds its whole record (a crash may cut a fill short)."""
    with path.open("rb") as handle:
        declared = _sealed_length(handle.read(_HEADER))
    return declared is not None and length == _HEADER + declared


class SpoolDrainer:
    """Ingests spool entries until ``stop`` is set; retries an entry whose ingest raised (the
    catalog or store unavailable) with backoff, never drops it."""

    def __init__(
        self,
        spool: Spool,
        sink: Sink,
        *,
        on_outcome: Callable[[str], None] | None = None,
        poll: float = 0.1,
        max_backoff: float = 30.0,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.on_outcome = on_outcome
        self.poll = poll
        self.max_backoff = max_backoff
        self.drained = 0
        self.unreadable = 0

    def drain_once(self, stop: threading.Event | None = None) -> int:
        """Ingest what is pending now, until ``stop`` is set (checked between entries: a
        SIGTERM finishes the entry in hand, the rest stays for the next start); how many
        entries were committed. Raises what the ingest path raised (the entry stays)."""
        done = 0
        for path in self.spool.pending():
            if stop is not None and stop.is_set():
                break
            with self.spool.claim(path) as claimed:
                if claimed is None:
                    continue
                entry, data = claimed
                outcome = self.sink.ingest_bytes(data, entry.source, input_sha256=entry.digest)
            done += 1
            self.drained += 1
            if self.on_outcome is not None:
                self.on_outcome(str(outcome.status))
        return done

    def run(self, stop: threading.Event) -> None:
        backoff = self.poll
        while not stop.is_set():
            try:
                done = self.drain_once(stop)
            except SpoolError as exc:
                self.unreadable += 1
                LOGGER.error("%s", exc)
                continue
            except Exception as exc:
                LOGGER.error("spool drain failed (%s): retrying in %.1f s", type(exc).__name__, backoff)
                stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            if done:
                backoff = self.poll
            else:
                stop.wait(backoff)
