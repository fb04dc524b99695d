"""The append-only, hash-chained audit log in the catalog.

Each entry's ``hash`` is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of
its fields and the previous entry's hash, so altering, deleting, inserting or reordering a
row breaks the chain. Because anyone can recompute SHA-256, each hash is also signed with the
audit writer's Ed25519 key (``keys/audit-signing.key``; verifiers hold only the public key),
so write access to the database without that key cannot rebuild a valid chain. The head
(seq, hash) is signed too and written outside the database (``audit/head.json``, and to an
optional witness: an append-only file or syslog), so truncating the newest entries is
detected; :mod:`governance.audit.chain` verifies all of it incrementally for the gate.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from governance.audit.entries import GENESIS_HASH, AuditError, AuditRow, canonical_json, entry_hash
from governance.audit.phi import check_details
from governance.catalog.db import Catalog, open_catalog
from governance.keyring import (
    AuditSigner,
    AuditVerifier,
    KeyMissing,
    action_in_scope,
    load_audit_signer,
    load_audit_verifier,
)
from governance.settings import get_settings

if TYPE_CHECKING:
    from governance.audit.verify import VerifyReport

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditRow",
    "PendingEntry",
    "canonical_json",
    "record",
]

_APPEND_RETRIES = 50
_HEAD_BYTES = 512
_ENTRY_CONTEXT = b"radgate-audit-entry-v2\0"
_ANCHOR_CONTEXT = b"radgate-audit-anchor-v2\0"


class PendingEntry(NamedTuple):
    """An entry to append (:meth:`AuditLog.append_many`); the log assigns seq, time and hashes."""

    actor: str
    action: str
    target: str
    details: dict[str, Any] | None = None
    role: str = ""


@dataclass(frozen=True)
class AuditEntry:
    """An audit entry as returned to callers."""

    seq: int
    ts: str
    actor: str
    role: str
    action: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
    key_id: str = ""
    mac: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        row.seq,
        row.ts,
        row.actor,
        row.role,
        row.action,
        row.target,
        dict(row.details),
        row.prev_hash,
        row.hash,
        row.key_id,
        row.mac,
    )


def _check_text(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise AuditError(f"audit {name} must be a non-empty string of at most {limit} characters")
    return value


class AuditLog:
    """The audit log of one catalog.

    Appending needs the audit writer's signing key (loaded on first append); reading and
    verifying need only the public key.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        signer: AuditSigner | None = None,
        verifier: AuditVerifier | None = None,
        head_file: Path | None = None,
        witness: str | None = None,
    ) -> None:
        self.catalog = catalog or open_catalog()
        self._signer = signer
        self._verifier = verifier
        settings = get_settings()
        self.head_file = head_file if head_file is not None else settings.audit_head_file
        self.witness = witness if witness is not None else settings.audit_witness

    @property
    def signer(self) -> AuditSigner:
        if self._signer is None:
            try:
                self._signer = load_audit_signer()
            except KeyMissing as exc:
                raise AuditError(f"this process cannot write the audit log: {exc}") from exc
        return self._signer

    @property
    def verifier(self) -> AuditVerifier:
        if self._verifier is None:
            try:
                self._verifier = load_audit_verifier()
            except KeyMissing as exc:
                raise AuditError(f"cannot verify the audit log: {exc}") from exc
        return self._verifier

    def _sign(self, entry_hash: str) -> str:
        return self.signer.sign(_ENTRY_CONTEXT + entry_hash.encode())

    def signature_valid(self, key_id: str, entry_hash: str, signature: str, action: str) -> bool:
        """Whether ``signature`` is the audit writer's signature of ``entry_hash`` (or a
        restricted writer's, for an ``action`` in its scope)."""
        verifier = self.verifier
        return verifier.permits(key_id, action) and verifier.verify(
            key_id, _ENTRY_CONTEXT + entry_hash.encode(), signature
        )

    # ---- writing -------------------------------------------------------------------------

    def append(
        self, actor: str, action: str, target: str, details: dict[str, Any] | None = None, *, role: str = ""
    ) -> AuditEntry:
        """Append one entry chained to the current head; safe across threads and processes."""
        return self.append_many([PendingEntry(actor, action, target, details, role)])[0]

    def append_many(self, pending: Sequence[PendingEntry]) -> list[AuditEntry]:
        """Append entries in order in one transaction (group commit): all are stored or none."""
        clean = [
            PendingEntry(
                _check_text("actor", p.actor, 64),
                _check_text("action", p.action, 64),
                _check_text("target", p.target, 255),
                check_details(p.details),
                p.role,
            )
            for p in pending
        ]
        scope = self.signer.scope
        if scope is not None:  # a restricted writer (audit-writer.key): its own actions only
            refused = sorted({p.action for p in clean if not action_in_scope(p.action, scope)})
            if refused:
                raise AuditError(f"this process's audit key may not sign {', '.join(refused)}")
        last_error: Exception | None = None
        for attempt in range(_APPEND_RETRIES):
            try:
                entries: list[AuditEntry] = []
                with self.catalog.session() as session:
                    head = session.scalar(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1))
                    seq = 0 if head is None else head.seq
                    prev = GENESIS_HASH if head is None else head.hash
                    for p in clean:
                        seq += 1
                        ts = datetime.now(UTC).isoformat(timespec="microseconds")
                        details = p.details or {}
                        digest = entry_hash(seq, ts, p.actor, p.role, p.action, p.target, details, prev)
                        row = AuditRow(
                            seq=seq,
                            ts=ts,
                            actor=p.actor,
                            role=p.role,
                            action=p.action,
                            target=p.target,
                            details=details,
                            prev_hash=prev,
                            hash=digest,
                            key_id=self.signer.key_id,
                            mac=self._sign(digest),
                        )
                        session.add(row)
                        entries.append(_entry(row))
                        prev = digest
                    session.flush()
                # A restricted writer signs no head: the next unrestricted append anchors its
                # entries, and the gate walks past the head to the end of the table anyway.
                if entries and scope is None:
                    self._write_head(entries[-1])
                return entries
            except (IntegrityError, OperationalError) as exc:  # another writer took this seq
                last_error = exc
                time.sleep(min(0.001 * (2**attempt), 0.05))
        raise AuditError("could not append to the audit log (contention)") from last_error

    def _write_head(self, entry: AuditEntry, *, force: bool = False) -> None:
        """Record the newest (seq, hash), signed, in the head file and the witness.

        One fixed-size ``pwrite`` at offset 0 (a single small write is seen whole by readers)
        instead of temp file + rename, which cost milliseconds per append on overlay file
        systems. A slower concurrent writer may leave an older head: still a valid anchor.
        """
        anchor = self.signed_anchor(entry.seq, entry.hash, entry.ts)
        encoded = json.dumps(anchor, sort_keys=True).encode()
        path = self.head_file
        path.parent.mkdir(parents=True, exist_ok=True)
        # Readable by others (a signed anchor is no secret): a restricted writer's process, which
        # signs none, reads the audit writer's head from a shared read-only mount.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            current = os.pread(fd, _HEAD_BYTES, 0)
            try:
                if int(json.loads(current).get("seq", 0)) >= entry.seq and not force:
                    return
            except (ValueError, AttributeError):
                pass
            os.pwrite(fd, encoded.ljust(_HEAD_BYTES), 0)
        finally:
            os.close(fd)
        if self.witness:
            from governance.audit.witness import send_to_witness

            send_to_witness(self.witness, encoded)

    def signed_anchor(self, seq: int, entry_hash: str, ts: str, kind: str = "head") -> dict[str, Any]:
        """``{"kind", "seq", "hash", "ts", "key_id", "sig"}`` signed by the audit writer."""
        if self.signer.scope is not None:
            raise AuditError("a restricted audit writer signs no anchor")
        body = {"kind": kind, "seq": seq, "hash": entry_hash, "ts": ts}
        return {
            **body,
            "key_id": self.signer.key_id,
            "sig": self.signer.sign(_ANCHOR_CONTEXT + canonical_json(body)),
        }

    def anchor_valid(self, anchor: Any, kind: str = "head") -> bool:
        """Whether ``anchor`` (parsed JSON) is an anchor of ``kind`` signed by the audit writer's
        current key (entries may carry retired keys; anchors are re-signed at rotation)."""
        if not isinstance(anchor, dict) or anchor.get("kind") != kind:
            return False
        if anchor.get("key_id") != self.verifier.key_id:
            return False
        try:
            body = {
                "kind": kind,
                "seq": int(anchor["seq"]),
                "hash": str(anchor["hash"]),
                "ts": str(anchor["ts"]),
            }
            return self.verifier.verify(
                str(anchor["key_id"]), _ANCHOR_CONTEXT + canonical_json(body), str(anchor["sig"])
            )
        except (KeyError, TypeError, ValueError):
            return False

    # ---- reading -------------------------------------------------------------------------

    def authentic(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` matches its own hash and carries the audit writer's signature.

        (Chain position is :mod:`governance.audit.chain`'s job; the gate uses both.)
        """
        e = entry
        digest = entry_hash(e.seq, e.ts, e.actor, e.role, e.action, e.target, e.details, e.prev_hash)
        return digest == entry.hash and self.signature_valid(entry.key_id, entry.hash, entry.mac, e.action)

    def head(self) -> AuditEntry | None:
        with self.catalog.session() as session:
            row = session.scalar(select(AuditRow).order_by(AuditRow.seq.desc()).limit(1))
            return None if row is None else _entry(row)

    def latest_seq(self, prefixes: Sequence[str]) -> int:
        """``seq`` of the newest entry whose action starts with one of ``prefixes`` (0: none).

        Each prefix is a range on the indexed ``action`` column (``'model.' <= action <
        'model/'``), so the query reads that index range, not the table: cheap enough to ask a
        few times a second while requests append their own entries.
        """
        if not prefixes:
            return 0
        condition = or_(
            *(
                (AuditRow.action >= prefix) & (AuditRow.action < prefix[:-1] + chr(ord(prefix[-1]) + 1))
                for prefix in prefixes
            )
        )
        with self.catalog.session() as session:
            return int(session.scalar(select(func.max(AuditRow.seq)).where(condition)) or 0)

    def get_by_hash(self, entry_hash: str) -> AuditEntry | None:
        with self.catalog.session() as session:
            row = session.scalar(select(AuditRow).where(AuditRow.hash == entry_hash))
            return None if row is None else _entry(row)

    def entries(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        target_prefix: str | None = None,
        actions: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        """Entries matching the filters. ``action`` matches as a prefix, ``actions`` exactly,
        ``target`` exactly and ``target_prefix`` as a prefix; ``since`` and ``until`` are ISO
        dates or times (UTC)."""
        query = select(AuditRow)
        if actor:
            query = query.where(AuditRow.actor == actor)
        if action:
            query = query.where(AuditRow.action.startswith(action, autoescape=True))
        if actions:
            query = query.where(AuditRow.action.in_(actions))
        if target:
            query = query.where(AuditRow.target == target)
        if target_prefix:
            query = query.where(AuditRow.target.startswith(target_prefix, autoescape=True))
        if since:
            query = query.where(AuditRow.ts >= _iso(since))
        if until:
            query = query.where(AuditRow.ts < _iso(until))
        query = query.order_by(AuditRow.seq.desc() if newest_first else AuditRow.seq)
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as session:
            return [_entry(r) for r in session.scalars(query)]

    def export(self, out: Any, *, since: str | None = None) -> int:
        """Write entries as JSON lines to the text stream ``out``; returns how many."""
        count = 0
        for entry in self._iter_rows(since=since):
            out.write(_entry(entry).to_json() + "\n")
            count += 1
        return count

    def _iter_rows(self, *, since: str | None = None, batch: int = 1000) -> Iterator[AuditRow]:
        last = 0
        while True:
            query = select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(batch)
            if since:
                query = query.where(AuditRow.ts >= _iso(since))
            with self.catalog.session() as session:
                rows = list(session.scalars(query))
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    # ---- anchoring and verification (governance.audit.verify) ----------------------------

    def anchor_to_file(self, path: Path) -> dict[str, Any]:
        """Write the current head (seq, hash, time) to ``path`` (for a WORM disk or a ticket)."""
        from governance.audit.verify import anchor_to_file

        return anchor_to_file(self, path)

    def anchor_to_mlflow(self, client: Any = None) -> dict[str, Any]:
        """Record the head as a tag of the MLflow experiment ``radgate-audit``."""
        from governance.audit.verify import anchor_to_mlflow

        return anchor_to_mlflow(self, client)

    def verify(
        self,
        anchors: list[Path] | None = None,
        *,
        accept_key_ids: list[str] | None = None,
        mlflow_anchor: bool = False,
    ) -> VerifyReport:
        """Recompute the chain; see :func:`governance.audit.verify.verify_chain`."""
        from governance.audit.verify import verify_chain

        return verify_chain(self, anchors, accept_key_ids=accept_key_ids, mlflow_anchor=mlflow_anchor)


def _iso(value: str) -> str:
    """Normalise a date or datetime string to the stored UTC ISO format for comparisons."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise AuditError(f"not an ISO date or time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def record(
    actor: str, action: str, target: str, details: dict[str, Any] | None = None, *, role: str = ""
) -> None:
    """Append one entry to the audit log of the configured catalog (the everyday entry point)."""
    AuditLog().append(actor, action, target, details, role=role)
