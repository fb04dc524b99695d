"""Incremental verification of the audit chain for decisions that rely on it (the gate).

The gate reads approvals, revocations and promotions from the audit log, so it may trust the
log only as a whole: a deleted revocation is an *absence*, which no per-entry signature
shows. :class:`ChainGuard` establishes that the rows form one contiguous, signed chain from
genesis (or the last signed checkpoint) up to a head anchor that the audit writer signed and
wrote outside the database, and fails closed on anything else:

* the signed head anchor (``audit/head.json``) is missing, unsigned or signed by another key;
* the head anchor is older than one already seen (by this guard, or by the file witness);
* rows are missing (a gap, or fewer rows than the anchor names: truncation), reordered,
  altered, or not signed by the audit writer (or signed by a restricted writer's key after its
  revocation: :mod:`governance.audit.revocation`);
* the row the anchor or the checkpoint names does not have the anchored hash.

Verification is incremental: the position verified last is kept, so each check reads only
the rows appended since (plus two indexed queries that notice a deleted or replaced older row).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from governance.audit.entries import GENESIS_HASH, AuditError, AuditRow, row_hash
from governance.audit.revocation import WriterRevocations
from governance.audit.witness import last_witnessed

if TYPE_CHECKING:
    from governance.audit.log import AuditLog

__all__ = ["ChainBroken", "ChainGuard", "Position", "checkpoint_path", "read_anchor", "write_checkpoint"]

_BATCH = 2000
_TORN_READ_RETRIES = 3
#: A guard that walked at least this many entries signs a checkpoint at the verified head (when
#: its process holds the audit writer's key), so the next process starts from there.
CHECKPOINT_EVERY = 5000


class ChainBroken(RuntimeError):
    """The audit chain cannot be relied on; ``problem`` names why."""

    def __init__(self, problem: str, seq: int, detail: str) -> None:
        self.problem, self.seq, self.detail = problem, seq, detail
        super().__init__(f"audit chain {problem} at entry {seq}: {detail}")


@dataclass(frozen=True)
class Position:
    """A verified point of the chain."""

    seq: int
    hash: str


def checkpoint_path(log: AuditLog) -> Path:
    return log.head_file.with_name("checkpoint.json")


def read_anchor(path: Path) -> dict[str, Any] | None:
    """The JSON in an anchor file, ``None`` when absent; a torn read is retried."""
    for _ in range(_TORN_READ_RETRIES):
        try:
            text = path.read_bytes().strip(b" \0\n")
        except FileNotFoundError:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            continue
        return value if isinstance(value, dict) else {}
    return {}


def write_checkpoint(log: AuditLog, position: Position) -> dict[str, Any]:
    """Sign ``position`` (verified by the caller from genesis) as the new starting point."""
    from datetime import UTC, datetime

    anchor = log.signed_anchor(
        position.seq, position.hash, datetime.now(UTC).isoformat(timespec="seconds"), kind="checkpoint"
    )
    path = checkpoint_path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(anchor, sort_keys=True) + "\n")
    tmp.replace(path)
    return anchor


class ChainGuard:
    """Verifies the chain of ``log`` up to its signed head, remembering how far it got."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._verified = Position(0, GENESIS_HASH)
        self._highest_anchor = 0
        self._revocations: WriterRevocations | None = None  # those known up to _verified
        self._lock = threading.Lock()

    @property
    def verified(self) -> Position:
        return self._verified

    def check(self) -> Position:
        """Verify what was appended since the last check; raise :class:`ChainBroken`."""
        with self._lock:
            anchor = self._head_anchor()
            start = self._start()
            revocations = self._revocations_before(start)
            head = self._walk(start, anchor, revocations)
            self._verified, self._revocations = head, revocations
            self._highest_anchor = max(self._highest_anchor, anchor.seq)
            if head.seq - start.seq >= CHECKPOINT_EVERY:
                self._checkpoint(head)
            return head

    def _checkpoint(self, head: Position) -> None:
        # A verify-only process (no signing key) writes none: the next walk is just longer.
        with contextlib.suppress(AuditError, OSError):
            write_checkpoint(self.log, head)

    # ---- steps -------------------------------------------------------------------------------

    def _signed(self, value: dict[str, Any] | None, kind: str, label: str) -> Position:
        if not value or not self.log.anchor_valid(value, kind):
            raise ChainBroken("anchor-forged", 0, f"{label} is not signed by the audit writer's key")
        return Position(int(value["seq"]), str(value["hash"]))

    def _head_anchor(self) -> Position:
        value = read_anchor(self.log.head_file)
        if value is None:
            if self._row_count() == 0:
                return Position(0, GENESIS_HASH)
            raise ChainBroken("anchor-missing", 0, "the signed head anchor is missing")
        anchor = self._signed(value, "head", "the head anchor")
        if anchor.seq < self._highest_anchor:
            raise ChainBroken(
                "anchor-rolled-back", anchor.seq, f"head anchor went back from {self._highest_anchor}"
            )
        if self.log.witness:
            witnessed = last_witnessed(self.log.witness)
            if witnessed is not None:
                seen = self._signed(witnessed, "head", "the witness's last head")
                if seen.seq > anchor.seq:
                    raise ChainBroken(
                        "anchor-rolled-back", anchor.seq, f"the witness has seen entry {seen.seq}"
                    )
        return anchor

    def _start(self) -> Position:
        """The verified position to continue from, re-checked against the table."""
        start = self._verified
        if start.seq == 0:
            value = read_anchor(checkpoint_path(self.log))
            if value is not None:
                start = self._signed(value, "checkpoint", "the checkpoint")
        if start.seq == 0:
            return start
        with self.log.catalog.session() as session:
            count = session.scalar(
                select(func.count()).select_from(AuditRow).where(AuditRow.seq <= start.seq)
            )
            stored = session.scalar(select(AuditRow.hash).where(AuditRow.seq == start.seq))
        if count != start.seq:
            raise ChainBroken(
                "deleted", start.seq, f"{start.seq - (count or 0)} verified entries are missing"
            )
        if stored != start.hash:
            raise ChainBroken("altered", start.seq, "a verified entry was replaced")
        return start

    def _revocations_before(self, start: Position) -> WriterRevocations:
        """The writer revocations recorded up to ``start`` (read from the table when the walk
        starts at a checkpoint), plus those ``audit-writers.json`` marks."""
        if self._revocations is not None and start == self._verified:
            return self._revocations.copy()
        revocations = WriterRevocations.registered(self.log)
        if start.seq:
            revocations.load_until(self.log, start.seq)
        return revocations

    def _row_count(self) -> int:
        with self.log.catalog.session() as session:
            return int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)

    def _walk(self, start: Position, anchor: Position, revocations: WriterRevocations) -> Position:
        prev, expected = start.hash, start.seq + 1
        anchored_hash = start.hash if anchor.seq == start.seq else None
        if anchor.seq < start.seq:
            with self.log.catalog.session() as session:
                anchored_hash = session.scalar(select(AuditRow.hash).where(AuditRow.seq == anchor.seq))
        while True:
            query = select(AuditRow).where(AuditRow.seq >= expected).order_by(AuditRow.seq).limit(_BATCH)
            with self.log.catalog.session() as session:
                rows = list(session.scalars(query))  # sessions keep values after commit
            for row in rows:
                if row.seq != expected:
                    raise ChainBroken("deleted", expected, f"entries {expected}..{row.seq - 1} are missing")
                if row_hash(row) != row.hash:
                    raise ChainBroken(
                        "altered", row.seq, "content does not match its hash (altered or reordered)"
                    )
                if row.prev_hash != prev:
                    raise ChainBroken("altered", row.seq, "chain link broken")
                if not self.log.signature_valid(row.key_id, row.hash, row.mac, row.action):
                    raise ChainBroken("forged", row.seq, "not signed by the audit writer's key")
                revoked = revocations.revoked_at(row.key_id, row.seq)
                if revoked is not None:
                    raise ChainBroken("forged", row.seq, f"signed by a writer key revoked at entry {revoked}")
                revocations.note(self.log, row.seq, row.action, row.key_id, row.details)
                if row.seq == anchor.seq:
                    anchored_hash = row.hash
                prev, expected = row.hash, expected + 1
            if len(rows) < _BATCH:
                break
        last = expected - 1
        if anchor.seq > last:
            raise ChainBroken(
                "truncated", last + 1, f"the signed head names entry {anchor.seq}, the log ends at {last}"
            )
        if anchor.seq and anchored_hash != anchor.hash:
            raise ChainBroken("altered", anchor.seq, "differs from the signed head anchor")
        return Position(last, prev)
