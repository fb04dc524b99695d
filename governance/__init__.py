"""Governance: settings, catalog, keys, identities and roles, audit log, approvals and policy.

Imports none of the other RadGate packages. The entry points other packages call are
re-exported here lazily (no MLflow or FastAPI import at ``import governance``):

- ``governance.gate(name, alias)`` -> :class:`governance.approvals.GateDecision` (serving)
- ``governance.record(actor, action, target, details, role=...)`` (audit, everyone)
- ``governance.principal_from_env_or_token(token)`` / ``governance.require_role(p, *roles)``
- ``governance.auth.fastapi_dependency(*roles)`` (protect FastAPI endpoints)
"""

from typing import Any

from governance.keys import KeyError_, ProjectKey, load_project_key
from governance.settings import Settings, get_settings

_LAZY = {
    "gate": "governance.approvals",
    "GateDecision": "governance.approvals",
    "record": "governance.audit",
    "AuditLog": "governance.audit",
    "authenticate": "governance.auth",
    "principal_from_env_or_token": "governance.auth",
    "require_role": "governance.auth",
    "Principal": "governance.auth",
    "Role": "governance.auth",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'governance' has no attribute {name!r}")
