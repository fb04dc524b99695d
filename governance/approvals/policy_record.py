"""The policy in force is signed: its SHA-256 in an audit entry (``policy.sign``) that the audit
writer signed as part of the chain.

The policy file says which roles must approve and which checks must pass; whoever can edit it
could otherwise lower the bar for every model without a trace. ``radgate policy sign`` (admin)
records the file's hash; the gate refuses to allow anything under a policy whose hash is not
the newest signed one, and promotion refuses too. On first use (no policy was ever signed in
this catalog) the first promotion signs the policy in force, audited as ``first_use``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from governance.auth.roles import Principal, Role, require_role

if TYPE_CHECKING:
    from governance.audit import AuditEntry, AuditLog
    from governance.policy import Policy

__all__ = ["POLICY_SIGN_ACTION", "PolicyNotSigned", "policy_reason", "sign_policy", "signed_policy_sha256"]

POLICY_SIGN_ACTION = "policy.sign"


class PolicyNotSigned(RuntimeError):
    """The policy in force is not the one last signed."""


def signed_policy_sha256(audit: AuditLog) -> str | None:
    """The hash of the newest signed policy (``None`` when none was ever signed)."""
    from governance.audit import ChainBroken

    for entry in audit.entries(actions=[POLICY_SIGN_ACTION], newest_first=True, limit=1):
        if not audit.authentic(entry):
            raise ChainBroken(
                "forged", entry.seq, "a policy signature entry is not signed by the audit writer"
            )
        return str(entry.details.get("policy_sha256", ""))
    return None


def policy_reason(audit: AuditLog, policy: Policy) -> str | None:
    """Why ``policy`` may not be relied on (``None`` when it is the newest signed policy)."""
    signed = signed_policy_sha256(audit)
    if signed is None:
        return "the policy in force was never signed (radgate policy sign)"
    if signed != policy.sha256:
        return (
            f"the policy in force (sha256 {policy.sha256[:12]}) differs from the signed one ({signed[:12]})"
        )
    return None


def sign_policy(
    audit: AuditLog, principal: Principal, policy: Policy, *, first_use: bool = False
) -> AuditEntry:
    """Record ``policy`` as the one in force (admin; on first use, the promoter)."""
    if not first_use:
        require_role(principal, Role.ADMIN)
    return audit.append(
        principal.name,
        POLICY_SIGN_ACTION,
        "policy:approval",
        {"policy_sha256": policy.sha256, "first_use": first_use},
        role=principal.role.value,
    )
