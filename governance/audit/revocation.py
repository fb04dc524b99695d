"""Revoked restricted-writer keys, as the audit chain records them.

``radgate keys rotate --writer NAME`` appends a ``keys.writer.revoke`` entry (signed by the
governance audit writer) naming the revoked key; ``audit-writers.json`` marks the key
``revoked_after`` that entry's seq. Every chain walk (``audit verify``, the gate's
:class:`~governance.audit.chain.ChainGuard`) then treats an entry signed by that key *after*
the revocation as ``forged``; the entries it signed before stay valid. The chain itself is the
source that every verifier shares (a service's copy of ``audit-writers.json`` may be older);
the registry's mark also covers a walk that starts from a checkpoint past the revocation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from governance.audit.entries import AuditError, AuditRow, row_hash
from governance.keyring import REVOKE_WRITER

if TYPE_CHECKING:
    from governance.audit.log import AuditLog

__all__ = ["WriterRevocations"]


@dataclass
class WriterRevocations:
    """Key id -> the seq of the entry that revoked it."""

    after: dict[str, int] = field(default_factory=dict)

    @classmethod
    def registered(cls, log: AuditLog) -> WriterRevocations:
        """The revocations ``audit-writers.json`` marks (the verifier's registry)."""
        try:
            writers = log.verifier.writers
        except AuditError:  # no verification key: every signed row fails on its own
            writers = ()
        return cls({w.key_id: w.revoked_after for w in writers if w.revoked_after is not None})

    def copy(self) -> WriterRevocations:
        return WriterRevocations(dict(self.after))

    def revoked_at(self, key_id: str, seq: int) -> int | None:
        """The revocation's seq when ``key_id`` was revoked before entry ``seq``, else ``None``."""
        at = self.after.get(key_id)
        return at if at is not None and seq > at else None

    def note(self, log: AuditLog, seq: int, action: str, key_id: str, details: Any) -> None:
        """Take in a verified entry: a revocation signed by the governance writer counts (a
        restricted writer cannot revoke a key, nor a governance key be revoked here)."""
        if action != REVOKE_WRITER or not log.verifier.unrestricted(key_id) or not isinstance(details, dict):
            return
        revoked = details.get("key_id")
        if isinstance(revoked, str) and not log.verifier.unrestricted(revoked):
            self.after[revoked] = min(seq, self.after.get(revoked, seq))

    def load_until(self, log: AuditLog, seq: int) -> None:
        """Take in the revocations recorded up to entry ``seq`` (a walk that starts there: the
        rows before it are not walked again), each checked for its hash and signature."""
        query = select(AuditRow).where(AuditRow.action == REVOKE_WRITER, AuditRow.seq <= seq)
        with log.catalog.session() as session:
            rows = list(session.scalars(query))
        for row in rows:
            if row_hash(row) == row.hash and log.signature_valid(row.key_id, row.hash, row.mac, row.action):
                self.note(log, row.seq, row.action, row.key_id, row.details)
