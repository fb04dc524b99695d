"""Export the audit chain to an audit repository, in order, never dropping an entry.

The local hash chain is the source of truth and the durable queue at once: an exporter keeps only
a cursor (the last exported entry's seq and hash, written atomically), reads the entries after it
from the chain and advances it after each message the destination took. A destination that is
down stops the pump at the first failure and nothing is skipped; :meth:`ChainExporter.run` retries
with exponential backoff. The backlog (head seq minus cursor) is what monitoring shows. Delivery is
at least once (a crash between send and cursor write resends one entry); each message carries the
entry's seq and hash so the repository can drop the repeat.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from governance.audit.log import AuditEntry, AuditLog, AuditRow
from governance.settings import get_settings

__all__ = [
    "Backoff",
    "ChainExporter",
    "ExportCursor",
    "PumpReport",
    "entries_after",
    "export_dir",
    "wait_until",
]

LOGGER = logging.getLogger(__name__)


def export_dir() -> Path:
    """Where exporters keep their cursors (``RADGATE_HOME/audit/export``)."""
    return get_settings().home / "audit" / "export"


def entries_after(log: AuditLog, seq: int, limit: int) -> list[AuditEntry]:
    """Up to ``limit`` entries with a seq above ``seq``, in chain order."""
    query = select(AuditRow).where(AuditRow.seq > seq).order_by(AuditRow.seq).limit(limit)
    with log.catalog.session() as session:
        return [
            AuditEntry(
                seq=r.seq,
                ts=r.ts,
                actor=r.actor,
                role=r.role,
                action=r.action,
                target=r.target,
                details=dict(r.details or {}),
                prev_hash=r.prev_hash,
                hash=r.hash,
                key_id=r.key_id,
                mac=r.mac,
            )
            for r in session.scalars(query)
        ]


class ExportCursor:
    """The last entry an exporter delivered, in a small JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            return int(json.loads(self.path.read_text()).get("seq", 0))
        except FileNotFoundError:
            return 0
        except (ValueError, AttributeError, OSError) as exc:
            raise RuntimeError(f"export cursor {self.path.name} is unreadable: {type(exc).__name__}") from exc

    def write(self, entry: AuditEntry) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump({"seq": entry.seq, "hash": entry.hash, "ts": entry.ts}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)


@dataclass(frozen=True)
class PumpReport:
    sent: int
    backlog: int
    error: str | None = None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter between ``initial_s`` and ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 300.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** max(0, failures - 1)))
        return random.uniform(ceiling / 2, ceiling)


class ChainExporter:
    """Sends each chain entry after the cursor through ``send`` (which raises on failure)."""

    def __init__(
        self,
        name: str,
        send: Callable[[AuditEntry], None],
        *,
        log: AuditLog | None = None,
        cursor: ExportCursor | None = None,
        batch: int = 200,
    ) -> None:
        self.name = name
        self.send = send
        self.log = log or AuditLog()
        self.cursor = cursor or ExportCursor(export_dir() / f"{name}.json")
        self.batch = batch
        self.failures = 0
        self.last_error: str | None = None

    def backlog(self) -> int:
        head = self.log.head()
        return 0 if head is None else max(0, head.seq - self.cursor.read())

    def pump(self, limit: int | None = None) -> PumpReport:
        """Send entries after the cursor in order until caught up, ``limit`` or the first failure."""
        sent = 0
        after = self.cursor.read()
        while limit is None or sent < limit:
            entries = entries_after(self.log, after, self.batch)
            if not entries:
                break
            for entry in entries:
                try:
                    self.send(entry)
                except Exception as exc:  # the destination's own error types vary; the entry stays queued
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    LOGGER.warning(
                        "audit export %s stopped at seq %d: %s", self.name, entry.seq, self.last_error
                    )
                    return PumpReport(sent, self.backlog(), self.last_error)
                self.cursor.write(entry)
                after = entry.seq
                sent += 1
                if limit is not None and sent >= limit:
                    break
        self.failures = 0
        self.last_error = None
        return PumpReport(sent, self.backlog())

    def run(self, stop: threading.Event, *, interval_s: float = 2.0, backoff: Backoff | None = None) -> None:
        """Pump until ``stop`` is set: every ``interval_s`` when healthy, with backoff after failures."""
        backoff = backoff or Backoff()
        while not stop.is_set():
            try:
                report = self.pump()
            except (OSError, RuntimeError, SQLAlchemyError) as exc:  # catalog or cursor unreadable
                self.failures += 1
                self.last_error = type(exc).__name__
                LOGGER.warning("audit export %s paused: %s", self.name, self.last_error)
                report = PumpReport(0, -1, self.last_error)
            wait = backoff.delay(self.failures) if report.error else interval_s
            stop.wait(wait)

    def start(
        self, *, interval_s: float = 2.0, backoff: Backoff | None = None
    ) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; set the returned event to stop it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run,
            args=(stop,),
            kwargs={"interval_s": interval_s, "backoff": backoff},
            name=f"audit-export-{self.name}",
            daemon=True,
        )
        thread.start()
        return thread, stop


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (for callers that need a caught-up export)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()
