"""The approval policy: its schema (YAML, pydantic) and its evaluation into a checklist."""

from governance.policy.evaluate import (
    Checklist,
    Decision,
    DecisionKind,
    Evidence,
    Requirement,
    Submission,
    evaluate,
)
from governance.policy.schema import (
    POLICY_ENV,
    TASK_TAG,
    ApprovalRequirement,
    Check,
    CheckSource,
    Comparison,
    ModelPolicy,
    ModelTask,
    Policy,
    PolicyError,
    default_policy_path,
    load_policy,
)

__all__ = [
    "POLICY_ENV",
    "TASK_TAG",
    "ApprovalRequirement",
    "Check",
    "CheckSource",
    "Checklist",
    "Comparison",
    "Decision",
    "DecisionKind",
    "Evidence",
    "ModelPolicy",
    "ModelTask",
    "Policy",
    "PolicyError",
    "Requirement",
    "Submission",
    "default_policy_path",
    "evaluate",
    "load_policy",
]
