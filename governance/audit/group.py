"""Group commit for busy writers (the serving ingress): entries submitted concurrently from many
threads or asyncio tasks are appended together, one transaction per group, by one writer thread.

Nothing is deferred past the caller: :meth:`GroupCommit.submit` returns a future that completes
when the caller's entry is committed (catalog row and head anchor written), so a caller that
waits for it (``await group.record(...)``) has the same guarantee as :func:`record`: the entry is
durable before it answers. What changes is the cost under load: N concurrent entries take one
transaction and one head write instead of N transactions contending for the chain head. A group
is whatever was queued while the previous one was being written (no timer, so a lone entry is
written at once). One entry that cannot be written (invalid details, PHI) fails alone.

:meth:`GroupCommit.record` (a caller on an event loop) first tries to append the entry at once,
on the loop itself, when nothing else is being written by this object, the catalog is a local
SQLite file and the database is not locked by another writer (:meth:`AuditLog.try_append_many`,
which never waits): a lone entry is then committed without the two thread wake-ups of a hand-off
to the writer thread and back, which cost milliseconds on a loaded machine. Otherwise (another
group in progress, a locked database, PostgreSQL, a witness) it is queued as above.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any

from governance.audit.log import AuditEntry, AuditLog, PendingEntry

__all__ = ["GroupCommit"]

_Item = tuple[PendingEntry, "Future[AuditEntry]"]


class GroupCommit:
    """Appends submitted entries in groups of at most ``max_group`` (thread-safe).

    The audit log is opened per group (``AuditLog()``), so the configured catalog and project key
    are the ones in effect when the entry is written, as with :func:`record`.
    """

    def __init__(self, *, max_group: int = 64) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Held while this object writes (the writer thread's group, or an entry at once).
        self._writing = threading.Lock()

    def submit(
        self, actor: str, action: str, target: str, details: dict[str, Any] | None = None, *, role: str = ""
    ) -> Future[AuditEntry]:
        """Queue one entry; the future holds the stored entry, or the error that refused it."""
        done: Future[AuditEntry] = Future()
        self._queue.put((PendingEntry(actor, action, target, details, role), done))
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="audit-group-commit", daemon=True)
                self._writer.start()
        return done

    async def record(
        self, actor: str, action: str, target: str, details: dict[str, Any] | None = None, *, role: str = ""
    ) -> AuditEntry:
        """Append one entry (grouped with concurrent ones); returns once it is committed."""
        if self._queue.empty() and self._writing.acquire(blocking=False):
            try:
                written = AuditLog().try_append_many([PendingEntry(actor, action, target, details, role)])
            finally:
                self._writing.release()
            if written is not None:
                return written[0]
        return await asyncio.wrap_future(self.submit(actor, action, target, details, role=role))

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < self.max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._writing:
                self._write(group)

    @staticmethod
    def _write(group: list[_Item]) -> None:
        try:
            entries = AuditLog().append_many([pending for pending, _ in group])
        except Exception as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
                return
            for item in group:  # find the entry at fault; the others are written one by one
                GroupCommit._write([item])
            return
        for (_, done), entry in zip(group, entries, strict=True):
            done.set_result(entry)
