"""The stored audit entry and its hash: the row, the canonical JSON and the chain's hash rule.

Below both the writer (:mod:`governance.audit.log`) and the verifiers (:mod:`governance.audit.
verify`, :mod:`governance.audit.chain`, :mod:`governance.audit.keys`), so that verification does
not import the writer and the writer may call verification without a cycle.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from governance.catalog.models import Base

__all__ = ["GENESIS_HASH", "AuditError", "AuditRow", "canonical_json", "entry_hash", "row_hash"]

GENESIS_HASH = "0" * 64


class AuditError(RuntimeError):
    """The audit log could not be written or read."""


class AuditRow(Base):
    """One audit entry as stored. ``seq`` is the position in the chain (1, 2, ...)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(32))
    # The Ed25519 signature (hex, 128 characters) of the audit writer over ``hash``.
    mac: Mapped[str] = mapped_column(String(160))


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(
    seq: int,
    ts: str,
    actor: str,
    role: str,
    action: str,
    target: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "role": role,
        "action": action,
        "target": target,
        "details": details,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def row_hash(row: Any, seq: int | None = None) -> str:
    """Hash of a stored row (an :class:`AuditRow` or a raw row with the same attributes)."""
    return entry_hash(
        row.seq if seq is None else seq,
        row.ts,
        row.actor,
        row.role,
        row.action,
        row.target,
        row.details,
        row.prev_hash,
    )
