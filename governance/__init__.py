"""Governance: settings, catalog, keys, identities and roles, audit log, approvals and policy.

Imports none of the other RadGate packages.
"""

from governance.keys import KeyError_, ProjectKey, load_project_key
from governance.settings import Settings, get_settings

__all__ = ["KeyError_", "ProjectKey", "Settings", "get_settings", "load_project_key"]
