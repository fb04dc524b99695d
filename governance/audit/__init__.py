"""The append-only, hash-chained audit log (tamper-evident; never PHI).

Everyday entry point: :func:`record` (``record(actor, action, target, details, role=...)``).
:class:`AuditLog` adds listing, export, anchoring and :meth:`AuditLog.verify`;
:class:`GroupCommit` groups concurrent entries into one transaction for busy writers (serving).
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from governance.audit.chain import ChainBroken, ChainGuard
    from governance.audit.group import GroupCommit
    from governance.audit.log import (
        GENESIS_HASH,
        AuditEntry,
        AuditError,
        AuditLog,
        AuditRow,
        PendingEntry,
        canonical_json,
        record,
    )
    from governance.audit.phi import AuditPHIError, check_details
    from governance.audit.verify import ANCHOR_EXPERIMENT, VerifyReport, verify_chain

__all__ = [
    "ANCHOR_EXPERIMENT",
    "GENESIS_HASH",
    "AuditEntry",
    "AuditError",
    "AuditLog",
    "AuditPHIError",
    "AuditRow",
    "ChainBroken",
    "ChainGuard",
    "GroupCommit",
    "PendingEntry",
    "VerifyReport",
    "canonical_json",
    "check_details",
    "record",
    "verify_chain",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
