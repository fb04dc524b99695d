"""Governance: settings, catalog, keys, identities and roles, audit log, approvals and policy.

Imports none of the other RadGate packages. The entry points other packages call are
re-exported here lazily (``import governance`` imports none of their dependencies):

- ``governance.gate(name, alias)`` -> :class:`governance.approvals.GateDecision` (serving)
- ``governance.record(actor, action, target, details, role=...)`` (audit, everyone)
- ``governance.principal_from_env_or_token(token)`` / ``governance.require_role(p, *roles)``
- ``governance.auth.fastapi_dependency(*roles)`` (protect FastAPI endpoints)
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from governance.approvals import GateDecision, gate
    from governance.audit import AuditLog, record
    from governance.auth import Principal, Role, authenticate, principal_from_env_or_token, require_role
    from governance.keys import KeyError_, ProjectKey, load_project_key
    from governance.settings import Settings, get_settings

__all__ = [
    "AuditLog",
    "GateDecision",
    "KeyError_",
    "Principal",
    "ProjectKey",
    "Role",
    "Settings",
    "authenticate",
    "gate",
    "get_settings",
    "load_project_key",
    "principal_from_env_or_token",
    "record",
    "require_role",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
