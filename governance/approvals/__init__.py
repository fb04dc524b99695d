"""Approvals on the MLflow registry: workflow, evidence, and the serving gate.

Serving: ``governance.approvals.gate(name, alias) -> GateDecision`` (cached a few seconds,
fails closed). CLI and UI: :class:`Workflow` (submit, approve, reject, revoke, promote, status).
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from governance.approvals.gate import (
        DEFAULT_TTL_S,
        Gate,
        GateDecision,
        clear_gate_cache,
        default_gate,
        gate,
    )
    from governance.approvals.registry import (
        TAG_ALIAS_PREFIX,
        TAG_ARTIFACT_SHA256,
        TAG_DECISION_PREFIX,
        TAG_STATUS,
        TAG_SUBMISSION,
        RegistryError,
        artifact_sha256,
        gather_evidence,
        hash_tree,
        model_target,
        registry_client,
    )
    from governance.approvals.workflow import (
        PROMOTER_ROLES,
        REVOKER_ROLES,
        SUBMITTER_ROLES,
        AliasNotAllowed,
        ApprovalError,
        Outcome,
        PolicyChanged,
        PolicyNotSatisfied,
        SelfApproval,
        VersionRevoked,
        Workflow,
    )

__all__ = [
    "DEFAULT_TTL_S",
    "PROMOTER_ROLES",
    "REVOKER_ROLES",
    "SUBMITTER_ROLES",
    "TAG_ALIAS_PREFIX",
    "TAG_ARTIFACT_SHA256",
    "TAG_DECISION_PREFIX",
    "TAG_STATUS",
    "TAG_SUBMISSION",
    "AliasNotAllowed",
    "ApprovalError",
    "Gate",
    "GateDecision",
    "Outcome",
    "PolicyChanged",
    "PolicyNotSatisfied",
    "RegistryError",
    "SelfApproval",
    "VersionRevoked",
    "Workflow",
    "artifact_sha256",
    "clear_gate_cache",
    "default_gate",
    "gate",
    "gather_evidence",
    "hash_tree",
    "model_target",
    "registry_client",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
