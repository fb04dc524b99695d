"""Sign-in cookie, role checks and CSRF tokens of the reviewer UI.

The HttpOnly, SameSite=Strict cookie holds a random server-side session id
(:mod:`serving.ui.sessions`: idle and absolute timeouts, a revoked user is signed out at once),
never the user's token. POSTs carry a CSRF token: an HMAC (the UI's own key,
``keys/ui-session.key``, which no other service holds) of the session id, so it is bound to the
session and cannot be computed by another site or another RadGate service.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from governance.auth import Principal, Role
from governance.keyring import UI_SESSION, load_store_key

__all__ = [
    "APPROVER_ROLES",
    "AUDIT_ROLES",
    "CASE_ROLES",
    "COOKIE",
    "DRIFT_ROLES",
    "MODEL_ROLES",
    "CsrfError",
    "NotSignedIn",
    "audit_read",
    "chain_report",
    "csrf_token",
    "current_principal",
    "verify_csrf",
]

COOKIE = "radgate_ui"
MODEL_ROLES = (Role.CLINICAL_REVIEWER, Role.ML_ENGINEER, Role.ADMIN, Role.AUDITOR)
APPROVER_ROLES = (Role.CLINICAL_REVIEWER, Role.ML_ENGINEER)
AUDIT_ROLES = (Role.AUDITOR, Role.ADMIN)
CASE_ROLES = (Role.CLINICAL_REVIEWER, Role.ML_ENGINEER)
DRIFT_ROLES = (Role.CLINICAL_REVIEWER, Role.ML_ENGINEER, Role.ADMIN, Role.AUDITOR)


class NotSignedIn(Exception):
    """No valid sign-in cookie (pages redirect to the sign-in form, APIs answer 401)."""


class CsrfError(Exception):
    """A POST without the CSRF token of the signed-in user."""


def current_principal(request: Request) -> Principal:
    from serving.ui.sessions import SessionExpired, session_principal

    try:
        return session_principal(request.cookies.get(COOKIE))
    except SessionExpired as exc:
        raise NotSignedIn(str(exc)) from exc


def audit_read(principal: Principal, kind: str, target: str) -> None:
    """Who viewed which patient-derived record (case, overlay, served result): one audit entry."""
    from governance.audit import record

    record(principal.name, f"ui.view.{kind}", target[:255], role=principal.role.value)


_GUARDS: dict[str, object] = {}


def chain_report() -> object:
    """The audit page's chain status, verified incrementally from the last verified position
    (or the signed checkpoint) instead of from genesis on every view."""
    from governance.audit import AuditLog, ChainBroken, ChainGuard, VerifyReport
    from governance.settings import get_settings

    url = get_settings().resolved_catalog_url
    guard = _GUARDS.get(url)
    if not isinstance(guard, ChainGuard):
        guard = _GUARDS[url] = ChainGuard(AuditLog())
    try:
        head = guard.check()
    except ChainBroken as exc:
        return VerifyReport(
            False,
            guard.verified.seq,
            guard.verified.seq,
            guard.verified.hash,
            exc.problem,
            exc.seq,
            exc.detail,
        )
    return VerifyReport(True, head.seq, head.seq, head.hash)


def csrf_token(session_id: str) -> str:
    return load_store_key(UI_SESSION).mac(b"ui-csrf\0" + session_id.encode()).hex()


def verify_csrf(request: Request, submitted: str | None) -> None:
    token = request.cookies.get(COOKIE)
    if not token or not submitted or not hmac.compare_digest(csrf_token(token), submitted):
        raise CsrfError("missing or wrong CSRF token")
