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
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import func, insert, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from governance.audit.entries import GENESIS_HASH, AuditError, AuditRow, canonical_json, entry_hash
from governance.audit.phi import check_details
from governance.catalog.db import Catalog, open_catalog
from governance.keyring import (
    AuditSigner,
    AuditVerifier,
    KeyMissing,
    action_in_scope,
    audit_key_paths,
    audit_writers_path,
    keys_dir,
    load_audit_signer,
    load_audit_verifier,
)
from governance.settings import Settings, get_settings

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


#: The newest entry's (seq, hash): the only columns an append reads.
_HEAD_QUERY = select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
_INSERT = insert(AuditRow)
#: The catalog's SQLite busy timeout (``governance.catalog.db``), restored after a no-wait attempt.
_SQLITE_BUSY_TIMEOUT_MS = 30000


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


_SIGNERS: dict[Path, tuple[tuple[Any, ...], AuditSigner]] = {}
_SIGNERS_LOCK = threading.Lock()


def _current_signer(settings: Settings) -> AuditSigner:
    """:func:`load_audit_signer`, reloaded only when a file it reads changed.

    The key files are read again whenever one of them (the audit writer's key, a restricted
    writer's key, the writers' registry) was replaced, rewritten or removed (inode, mtime, size),
    so a rotation or a writer's revocation takes effect at the next append, as when every
    append read them; what an append saves is the read, the parse and the key derivation."""
    directory = keys_dir(settings)
    private, public, _ = audit_key_paths(settings)
    files = (private, public, directory / "audit-writer.key", audit_writers_path(settings))
    state = tuple(_file_state(path) for path in files)
    with _SIGNERS_LOCK:
        cached = _SIGNERS.get(directory)
        if cached is not None and cached[0] == state:
            return cached[1]
    signer = load_audit_signer(settings)
    with _SIGNERS_LOCK:
        # The state read before loading: a change during the load is seen at the next append.
        _SIGNERS[directory] = (state, signer)
        while len(_SIGNERS) > 8:
            _SIGNERS.pop(next(iter(_SIGNERS)))
    return signer


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "ts": entry.ts,
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "target": entry.target,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
        "key_id": entry.key_id,
        "mac": entry.mac,
    }


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
                return _current_signer(get_settings())
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
        clean, signer = self._prepare(pending)
        last_error: Exception | None = None
        for attempt in range(_APPEND_RETRIES):
            try:
                return self._attempt(clean, signer)
            except (IntegrityError, OperationalError) as exc:  # another writer took this seq
                last_error = exc
                time.sleep(min(0.001 * (2**attempt), 0.05))
        raise AuditError("could not append to the audit log (contention)") from last_error

    def try_append_many(self, pending: Sequence[PendingEntry]) -> list[AuditEntry] | None:
        """:meth:`append_many` in one attempt that never waits: ``None`` (nothing written) when
        another writer holds the database or took the next seq, and always for a catalog that
        is not a local SQLite file or a head that goes to a witness (their writes may wait on
        the network). For a caller on an event loop, which then hands the entries to a thread
        (:class:`~governance.audit.group.GroupCommit`). Invalid entries raise as in
        :meth:`append_many`."""
        if self.witness or self.catalog.engine.dialect.name != "sqlite":
            return None
        clean, signer = self._prepare(pending)
        try:
            return self._attempt(clean, signer, wait=False)
        except (IntegrityError, OperationalError):
            return None

    def _prepare(self, pending: Sequence[PendingEntry]) -> tuple[list[PendingEntry], AuditSigner]:
        """The entries checked (lengths, PHI in details, the key's scope) and the key to sign with."""
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
        signer = self.signer  # one key for the whole group, its head included
        scope = signer.scope
        if scope is not None:  # a restricted writer (audit-writer.key): its own actions only
            refused = sorted({p.action for p in clean if not action_in_scope(p.action, scope)})
            if refused:
                raise AuditError(f"this process's audit key may not sign {', '.join(refused)}")
        return clean, signer

    def _attempt(
        self, clean: list[PendingEntry], signer: AuditSigner, *, wait: bool = True
    ) -> list[AuditEntry]:
        """One transaction: read the head's (seq, hash), insert the rows chained to it, commit;
        then the signed head. Core SQL on one connection (no ORM session, unit of work or
        identity map). A concurrent writer that took the same seq fails it on the primary key
        (:class:`IntegrityError`); ``wait=False`` (SQLite): a database locked by another writer
        fails it at once (:class:`OperationalError`) instead of after the busy timeout."""
        key_id = signer.key_id
        entries: list[AuditEntry] = []
        with self.catalog.engine.begin() as connection:
            if not wait:
                connection.exec_driver_sql("PRAGMA busy_timeout=0")
            try:
                head = connection.execute(_HEAD_QUERY).first()
                seq = 0 if head is None else int(head[0])
                prev = GENESIS_HASH if head is None else str(head[1])
                for p in clean:
                    seq += 1
                    ts = datetime.now(UTC).isoformat(timespec="microseconds")
                    details = p.details or {}
                    digest = entry_hash(seq, ts, p.actor, p.role, p.action, p.target, details, prev)
                    mac = signer.sign(_ENTRY_CONTEXT + digest.encode())
                    entries.append(
                        AuditEntry(
                            seq, ts, p.actor, p.role, p.action, p.target, dict(details), prev, digest,
                            key_id, mac,
                        )
                    )  # fmt: skip
                    prev = digest
                connection.execute(_INSERT, [_row(e) for e in entries])
            finally:
                if not wait:  # the pooled connection goes back with the usual timeout
                    connection.exec_driver_sql(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        # A restricted writer signs no head: the next unrestricted append anchors its entries,
        # and the gate walks past the head to the end of the table anyway.
        if entries and signer.scope is None:
            self._write_head(entries[-1], signer=signer)
        return entries

    def _write_head(
        self, entry: AuditEntry, *, force: bool = False, signer: AuditSigner | None = None
    ) -> None:
        """Record the newest (seq, hash), signed, in the head file and the witness.

        One fixed-size ``pwrite`` at offset 0 (a single small write is seen whole by readers)
        instead of temp file + rename, which cost milliseconds per append on overlay file
        systems. A slower concurrent writer may leave an older head: still a valid anchor.
        """
        anchor = self.signed_anchor(entry.seq, entry.hash, entry.ts, signer=signer)
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

    def signed_anchor(
        self, seq: int, entry_hash: str, ts: str, kind: str = "head", *, signer: AuditSigner | None = None
    ) -> dict[str, Any]:
        """``{"kind", "seq", "hash", "ts", "key_id", "sig"}`` signed by the audit writer
        (``signer``: the key an append just signed its entries with, else :attr:`signer`)."""
        signer = signer or self.signer
        if signer.scope is not None:
            raise AuditError("a restricted audit writer signs no anchor")
        body = {"kind": kind, "seq": seq, "hash": entry_hash, "ts": ts}
        return {
            **body,
            "key_id": signer.key_id,
            "sig": signer.sign(_ANCHOR_CONTEXT + canonical_json(body)),
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
