"""Start-up recovery after a crash: temporary files, and store objects without catalog records.

The store writes through ``.tmp-*`` files (rename, fsync), so a SIGKILL can leave one behind
but never a partial object. The gateway answers success only once an instance's object and its
catalog record are both durable (flushed at the same time, after the object's rename), so a
process killed in between leaves a complete object that no record names (an *orphan*); its
sender heard no success and will resend it. After a power loss, the reverse can also happen: a
committed record whose object never became durable (its sender heard no success either). A
window's orphans are removed, and so are its records without objects (the ingest path also
treats such a record as absent, so a resend restores the object).

Each run of the gateway is noted in ``RADGATE_HOME/gateway/runs.json``; a run that did not stop
cleanly leaves a *window* (its start to the next start) whose objects are checked against the
catalog. Other writers (``radgate ingest``) may be running, so only objects older than
``max_age`` seconds are judged; younger ones stay pending for a later pass. Log lines carry
counts only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from governance.settings import Settings, get_settings

if TYPE_CHECKING:
    from governance.catalog import Catalog

__all__ = ["Reconciliation", "RunJournal", "reconcile_window", "sweep_stale_temp_files"]

LOGGER = logging.getLogger(__name__)
_HEX = frozenset("0123456789abcdef")
_CLOCK_SLACK = 2.0  # seconds of mtime granularity and clock steps before a window


def _local_store(settings: Settings) -> Path | None:
    store = settings.resolved_object_store
    return Path(store.removeprefix("file://")) if "://" not in store or store.startswith("file://") else None


def sweep_stale_temp_files(max_age: float, settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    roots = [settings.quarantine_dir]
    store = _local_store(settings)
    if store is not None:
        roots.append(store)
    cutoff = time.time() - max_age
    removed = 0
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob(".tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
    return removed


@dataclass
class Reconciliation:
    """What one pass found (counts only)."""

    checked_objects: int = 0
    orphan_objects: int = 0  # objects without a record, removed
    orphan_quarantine: int = 0  # quarantine files without a record, removed
    missing_objects: int = 0  # records whose object is missing, removed
    pending_windows: int = 0  # windows with objects too young to judge yet

    def as_dict(self) -> dict[str, int]:
        return {
            "checked_objects": self.checked_objects,
            "orphan_objects": self.orphan_objects,
            "orphan_quarantine": self.orphan_quarantine,
            "missing_objects": self.missing_objects,
            "pending_windows": self.pending_windows,
        }

    def add(self, other: Reconciliation) -> None:
        for name, value in other.as_dict().items():
            setattr(self, name, getattr(self, name) + value)


def _objects_since(root: Path, since: float, until: float) -> list[Path]:
    """Store objects (``xx/yy/<sha256>.dcm``) modified in [since, until]; leaf folders not
    modified since ``since`` are skipped without listing them."""
    found: list[Path] = []
    if not root.is_dir():
        return found
    for top in os.scandir(root):
        if not (top.is_dir(follow_symlinks=False) and len(top.name) == 2):
            continue
        for leaf in os.scandir(top.path):
            if not leaf.is_dir(follow_symlinks=False) or leaf.stat().st_mtime < since:
                continue
            for entry in os.scandir(leaf.path):
                name = entry.name
                if not (name.endswith(".dcm") and len(name) == 68 and set(name[:64]) <= _HEX):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if since <= entry.stat().st_mtime <= until:
                        found.append(Path(entry.path))
    return found


def _quarantine_since(root: Path, since: float, until: float) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for entry in os.scandir(root):
        stem, dot, suffix = entry.name.partition(".")
        if not (dot and suffix in ("sealed", "json") and len(stem) == 64 and set(stem) <= _HEX):
            continue
        with contextlib.suppress(FileNotFoundError):
            if since <= entry.stat().st_mtime <= until:
                found.setdefault(stem, []).append(Path(entry.path))
    return found


def _unlink_durably(paths: list[Path]) -> int:
    from imaging.ingest.commit import fsync_directory

    removed, folders = 0, set()
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
            folders.add(path.parent)
    for folder in folders:
        fsync_directory(folder)
    return removed


def reconcile_window(since: float, until: float, settings: Settings | None = None) -> Reconciliation:
    """Remove objects and quarantine files written in [since, until] that no catalog record
    names; count records of that window whose object is missing."""
    from governance.catalog import Instance, QuarantineRecord, open_catalog

    settings = settings or get_settings()
    since -= _CLOCK_SLACK
    result = Reconciliation()
    catalog = open_catalog(settings)
    store = _local_store(settings)
    if store is not None:
        objects = {path.name[:64]: path for path in _objects_since(store, since, until)}
        result.checked_objects = len(objects)
        keys = list(objects)
        known = _present(catalog, Instance.sha256, keys)
        result.orphan_objects = _unlink_durably([objects[k] for k in keys if k not in known])
        # Records of the window whose object is not there (never durable before a power loss).
        with catalog.session() as session:
            rows = session.execute(
                select(Instance.id, Instance.sha256).where(
                    Instance.created_at >= _utc(since), Instance.created_at <= _utc(until)
                )
            )
            missing = [i for i, sha in rows if not (store / sha[:2] / sha[2:4] / f"{sha}.dcm").exists()]
            if missing:
                session.execute(delete(Instance).where(Instance.id.in_(missing)))
            result.missing_objects = len(missing)
    quarantined = _quarantine_since(settings.quarantine_dir, since, until)
    if quarantined:
        digests = list(quarantined)
        recorded = _present(catalog, QuarantineRecord.input_sha256, digests)
        stray = [path for digest in digests if digest not in recorded for path in quarantined[digest]]
        result.orphan_quarantine = len({p.name.partition(".")[0] for p in stray})
        _unlink_durably(stray)
    return result


def _present(catalog: Catalog, column: Any, values: list[str]) -> set[str]:
    """Which of ``values`` the catalog holds in ``column`` (in chunks of 500)."""
    found: set[str] = set()
    with catalog.session() as session:
        for start in range(0, len(values), 500):
            found.update(session.scalars(select(column).where(column.in_(values[start : start + 500]))))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a journal of this very process that never ended (a test) or a reused pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _utc(timestamp: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


@dataclass
class RunJournal:
    """``runs.json``: the runs in progress (pid -> start) and the windows of interrupted runs
    still to check. A run whose process is gone without ``end()`` was interrupted; a run whose
    process is alive (another gateway on the same home) is left alone."""

    path: Path
    running: dict[str, float] = field(default_factory=dict)
    pending: list[list[float]] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def load(cls, settings: Settings | None = None, *, pid: int | None = None) -> RunJournal:
        settings = settings or get_settings()
        path = settings.home / "gateway" / "runs.json"
        pid = os.getpid() if pid is None else pid
        try:
            raw = json.loads(path.read_text())
            running = {str(int(k)): float(v) for k, v in dict(raw.get("running") or {}).items()}
            pending = [[float(a), float(b)] for a, b in raw.get("pending", [])]
            return cls(path, running, pending, pid)
        except FileNotFoundError:
            return cls(path, pid=pid)
        except (ValueError, TypeError, AttributeError, json.JSONDecodeError):
            LOGGER.error("recovery: %s is unreadable; checking the last day of objects", path.name)
            now = time.time()
            return cls(path, {}, [[now - 86400, now]], pid)

    def save(self) -> None:
        from imaging.store import atomic_write

        body = {"running": self.running, "pending": self.pending}
        atomic_write(self.path, json.dumps(body).encode())

    def begin(self, now: float | None = None) -> bool:
        """Note this run; True when an earlier run was interrupted (its window is now pending)."""
        now = time.time() if now is None else now
        interrupted = [pid for pid in self.running if not _alive(int(pid))]
        for pid in interrupted:
            self.pending.append([self.running.pop(pid), now])
        self.running[str(self.pid)] = now
        self.save()
        return bool(interrupted)

    def end(self) -> None:
        self.running.pop(str(self.pid), None)
        self.save()

    def reconcile(self, max_age: float, settings: Settings | None = None) -> Reconciliation:
        """Check every pending window up to ``now - max_age``; windows reaching past that stay
        pending (from where this pass stopped)."""
        total = Reconciliation()
        if not self.pending:
            return total
        cutoff = time.time() - max_age
        still: list[list[float]] = []
        for since, until in self.pending:
            upto = min(until, cutoff)
            if upto >= since:
                total.add(reconcile_window(since, upto, settings))
            if until > cutoff:
                still.append([max(since, cutoff), until])
        self.pending = still
        total.pending_windows = len(still)
        self.save()
        if total.orphan_objects or total.orphan_quarantine or total.missing_objects:
            LOGGER.warning(
                "recovery after an interrupted run: removed %d store objects and %d quarantine "
                "entries that no catalog record names, and %d catalog records whose object never "
                "became durable (their senders heard no success; a resend stores them); "
                "%d objects checked",
                total.orphan_objects,
                total.orphan_quarantine,
                total.missing_objects,
                total.checked_objects,
            )
        elif total.checked_objects:
            LOGGER.warning(
                "recovery after an interrupted run: %d objects checked, store and catalog agree",
                total.checked_objects,
            )
        return total
