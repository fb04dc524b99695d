"""A durable, ordered file queue for messages to external systems (FHIR bundles).

``pending/`` holds what has not been delivered yet, named so that sorting gives the order they were
queued in; a delivered message moves to ``sent/``; one the destination refused as invalid (a 4xx
that a retry cannot fix) moves to ``refused/`` with the answer beside it, counted and never lost.
Writes are temp file + fsync + rename, so a crash leaves either the whole message or none.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

__all__ = ["Outbox", "OutboxError"]

_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class OutboxError(RuntimeError):
    """The outbox could not be written."""


class Outbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pending_dir = root / "pending"
        self.sent_dir = root / "sent"
        self.refused_dir = root / "refused"
        self._lock = threading.Lock()
        self._last = 0

    @staticmethod
    def file_key(key: str) -> str:
        """How ``key`` appears in a message's file name (after its queue stamp)."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:80]

    def _name(self, key: str) -> str:
        with self._lock:  # strictly increasing, even within one clock tick
            stamp = max(time.time_ns(), self._last + 1)
            self._last = stamp
        return f"{stamp:020d}-{self.file_key(key)}.json"

    def put(self, key: str, data: bytes) -> Path:
        """Queue ``data``; returns its path under ``pending/``."""
        if len(data) > _MAX_MESSAGE_BYTES:
            raise OutboxError(f"message of {len(data)} bytes exceeds {_MAX_MESSAGE_BYTES}")
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        path = self.pending_dir / self._name(key)
        _atomic_write(path, data)
        return path

    def pending(self, limit: int | None = None) -> list[Path]:
        if not self.pending_dir.is_dir():
            return []
        names = sorted(p for p in self.pending_dir.iterdir() if p.suffix == ".json")
        return names[:limit] if limit else names

    def backlog(self) -> int:
        return len(self.pending())

    def refused(self) -> int:
        return len(list(self.refused_dir.glob("*.json"))) if self.refused_dir.is_dir() else 0

    def mark_sent(self, path: Path) -> Path:
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        target = self.sent_dir / path.name
        os.replace(path, target)
        return target

    def mark_refused(self, path: Path, answer: bytes) -> Path:
        self.refused_dir.mkdir(parents=True, exist_ok=True)
        target = self.refused_dir / path.name
        _atomic_write(target.with_suffix(".answer"), answer[:65536])
        os.replace(path, target)
        return target


def _atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
