"""The second approver of an erasure confirms it themself: request, confirm, execute.

Before, the honest broker ran ``erase`` with an admin's raw token on the command line: the
broker held (and the shell history kept) the co-signer's credential. Now:

1. the broker requests (``radgate erase --patient P --reason R --request``): an audit entry
   ``erasure.request`` with the subject (a keyed hash, never the identifier) and the reason's
   SHA-256, and a request id;
2. an admin, authenticated as themself, confirms (``radgate erase-confirm REQUEST_ID``):
   ``erasure.confirm``;
3. the broker executes with ``--confirmation REQUEST_ID``: the request must be theirs, for
   the same subject and reason, confirmed by an admin other than the requester, not used
   before and not older than :data:`VALIDITY`.

Every check reads authentic (signed) audit entries only.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from governance.audit import AuditEntry, AuditLog, record
from governance.auth import Principal, Role, require_role
from governance.auth.roles import PermissionDenied

__all__ = [
    "CONFIRM_ACTION",
    "REQUEST_ACTION",
    "VALIDITY",
    "CosignError",
    "confirm_erasure",
    "confirmed_approver",
    "request_erasure",
]

REQUEST_ACTION = "erasure.request"
CONFIRM_ACTION = "erasure.confirm"
VALIDITY = timedelta(days=7)


class CosignError(RuntimeError):
    """The erasure request, its confirmation or its use is not valid."""


def _target(request_id: str) -> str:
    return f"erasure-request:{request_id}"


def reason_sha256(reason: str) -> str:
    return hashlib.sha256(reason.encode()).hexdigest()


def request_erasure(principal: Principal, subject: str, reason: str) -> str:
    """Record the broker's request for ``subject``; returns the request id to confirm."""
    require_role(principal, Role.HONEST_BROKER)
    if not reason.strip():
        raise CosignError("a reason is required")
    request_id = secrets.token_hex(8)
    record(
        principal.name,
        REQUEST_ACTION,
        _target(request_id),
        {"subject": subject, "reason_sha256": reason_sha256(reason)},
        role=principal.role.value,
    )
    return request_id


def _authentic(log: AuditLog, request_id: str, action: str) -> list[AuditEntry]:
    entries = log.entries(target=_target(request_id), actions=[action])
    for entry in entries:
        if not log.authentic(entry):
            raise CosignError(f"audit entry {entry.seq} of this request is not signed by the audit writer")
    return entries


def confirm_erasure(principal: Principal, request_id: str) -> None:
    """An admin's own confirmation of a pending request (never the requester)."""
    try:
        require_role(principal, Role.ADMIN)
    except PermissionDenied as exc:
        raise CosignError(str(exc)) from exc
    log = AuditLog()
    requests = _authentic(log, request_id, REQUEST_ACTION)
    if not requests:
        raise CosignError(f"no erasure request {request_id}")
    if requests[0].actor == principal.name:
        raise CosignError("the requester cannot confirm their own erasure")
    record(
        principal.name,
        CONFIRM_ACTION,
        _target(request_id),
        {"subject": requests[0].details.get("subject", "")},
        role=principal.role.value,
    )


def confirmed_approver(principal: Principal, request_id: str, subject: str, reason: str) -> str:
    """The confirming admin's name, when ``request_id`` authorises ``principal`` to erase
    ``subject`` for ``reason`` now; raises :class:`CosignError` otherwise."""
    log = AuditLog()
    requests = _authentic(log, request_id, REQUEST_ACTION)
    if not requests:
        raise CosignError(f"no erasure request {request_id}")
    request = requests[0]
    if request.actor != principal.name:
        raise CosignError("this erasure was requested by someone else")
    if request.details.get("subject") != subject or request.details.get("reason_sha256") != reason_sha256(
        reason
    ):
        raise CosignError("the request was for another patient or another reason")
    if datetime.now(UTC) - datetime.fromisoformat(request.ts) > VALIDITY:
        raise CosignError("the erasure request has expired: request again")
    confirmations = [
        e
        for e in _authentic(log, request_id, CONFIRM_ACTION)
        if e.role == Role.ADMIN.value and e.actor != request.actor
    ]
    if not confirmations:
        raise CosignError(
            f"erasure request {request_id} is not confirmed by an admin (radgate erase-confirm)"
        )
    used = [e for e in log.entries(action="erasure.start") if e.details.get("request_id") == request_id]
    if used:
        raise CosignError(f"erasure request {request_id} was used already")
    return confirmations[0].actor
