"""The approval policy (``configs/governance/policy.yaml``), validated with pydantic.

A ``default`` section applies to every registered model; ``models.<name>`` overrides any of
its fields for one model. Example in ``configs/governance/policy.yaml``.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from governance.auth.roles import Role
from governance.settings import get_settings
from governance.strict import StrictModel
from governance.tags import Tag

__all__ = [
    "POLICY_ENV",
    "TASK_TAG",
    "ApprovalRequirement",
    "Check",
    "CheckSource",
    "Comparison",
    "ModelPolicy",
    "ModelTask",
    "Policy",
    "PolicyError",
    "default_policy_path",
    "load_policy",
]

POLICY_ENV = "RADGATE_POLICY"
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class PolicyError(ValueError):
    """The policy file is missing or invalid."""


class Comparison(enum.StrEnum):
    GE = ">="
    GT = ">"
    LE = "<="
    LT = "<"
    EQ = "=="
    NE = "!="

    def holds(self, value: Any, threshold: Any) -> bool:
        match self:
            case Comparison.GE:
                return bool(value >= threshold)
            case Comparison.GT:
                return bool(value > threshold)
            case Comparison.LE:
                return bool(value <= threshold)
            case Comparison.LT:
                return bool(value < threshold)
            case Comparison.EQ:
                return bool(value == threshold)
            case Comparison.NE:
                return bool(value != threshold)
        raise AssertionError(self)


class ModelTask(enum.StrEnum):
    """What a model does, read from its version's ``radgate.task`` tag (absent: classification)."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


#: Model-version tag naming the task (set by training at registration).
TASK_TAG = Tag.TASK


class CheckSource(enum.StrEnum):
    """Where a check reads its value: a metric of the version's run, or a tag (the model
    version's tag first, then the run's)."""

    METRIC = "metric"
    TAG = "tag"


class Check(StrictModel):
    """One evidence requirement, e.g. ``test_auroc >= 0.85`` or tag ``saliency_sanity == passed``.

    ``task`` limits the check to models of one task (``radgate.task`` tag; none = every model),
    so a classifier is not failed for lacking a Dice nor a segmenter for lacking an AUROC.
    A ``key`` ending in ``*`` is a prefix: every metric (or tag) starting with it must hold,
    e.g. ``test_dice_*`` >= 0.7 is a minimum Dice per structure; the worst value is reported.
    """

    name: str = Field(min_length=1, max_length=64)
    source: CheckSource = CheckSource.METRIC
    key: str = Field(min_length=1, max_length=250)
    op: Comparison
    threshold: float | str
    description: str = ""
    task: ModelTask | None = None

    @property
    def is_prefix(self) -> bool:
        return self.key.endswith("*")

    def applies_to(self, task: str | None) -> bool:
        """Whether the check is evaluated for a model of ``task`` (None: classification)."""
        return self.task is None or self.task == (task or ModelTask.CLASSIFICATION)

    @model_validator(mode="after")
    def _consistent(self) -> Check:
        if "*" in self.key and (not self.is_prefix or "*" in self.key[:-1] or len(self.key) < 2):
            raise ValueError(f"check {self.name!r}: only a trailing * after a prefix is allowed in key")
        if self.source is CheckSource.METRIC and not isinstance(self.threshold, float | int):
            raise ValueError(f"check {self.name!r}: a metric threshold must be a number")
        if isinstance(self.threshold, str) and self.op not in (Comparison.EQ, Comparison.NE):
            raise ValueError(f"check {self.name!r}: text thresholds only support == and !=")
        return self

    def describe(self) -> str:
        subject = f"every {self.key}" if self.is_prefix else self.key
        return f"{subject} {self.op.value} {self.threshold}"


class ApprovalRequirement(StrictModel):
    role: Role
    count: int = Field(default=1, ge=1, le=10)


class ModelPolicy(StrictModel):
    """What one registered model needs before an alias may point at one of its versions."""

    approvals: list[ApprovalRequirement] = Field(min_length=1)
    distinct_approvers: bool = True
    submitter_may_approve: bool = False
    checks: list[Check] = Field(default_factory=list)
    approval_valid_days: float = Field(gt=0, le=3650)
    allowed_aliases: list[str] = Field(min_length=1)

    @field_validator("allowed_aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not _ALIAS.match(alias) or alias.lower() == "latest":
                raise ValueError(f"invalid alias {alias!r}")
        return value

    @model_validator(mode="after")
    def _unique(self) -> ModelPolicy:
        roles = [a.role for a in self.approvals]
        if len(roles) != len(set(roles)):
            raise ValueError("each role may appear once in approvals (use count)")
        names = [c.name for c in self.checks]
        if len(names) != len(set(names)):
            raise ValueError("check names must be unique")
        return self


class Policy(StrictModel):
    """The whole policy file."""

    version: Literal[1] = 1
    default: ModelPolicy
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_valid(self) -> Policy:
        for name in self.models:
            self.for_model(name)  # raises on an invalid override
        return self

    def for_model(self, name: str) -> ModelPolicy:
        override = self.models.get(name)
        if not override:
            return self.default
        merged = {**self.default.model_dump(mode="json"), **override}
        try:
            return ModelPolicy.model_validate(merged)
        except ValidationError as exc:
            raise ValueError(f"policy for model {name!r}: {exc}") from exc

    @property
    def sha256(self) -> str:
        """Identifies the policy in force when an approval or a promotion was made."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def default_policy_path() -> Path:
    """``RADGATE_POLICY``, else ``RADGATE_HOME/policy.yaml``, else the repository's example."""
    if os.environ.get(POLICY_ENV):
        return Path(os.environ[POLICY_ENV])
    home_policy = get_settings().home / "policy.yaml"
    if home_policy.exists():
        return home_policy
    return Path(__file__).resolve().parents[2] / "configs" / "governance" / "policy.yaml"


# libyaml's safe loader when PyYAML was built with it (the same documents, parsed in C: a
# replica's first gate decision reads the policy), else the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The policies this process has parsed, by the SHA-256 of the file's bytes: a file that reads the
# same bytes is the same policy (a frozen model), so it is validated once. The file is read
# and hashed on every load, so an edited policy is parsed and validated again at once.
_PARSED: dict[str, Policy] = {}
_PARSED_MAX = 8


def load_policy(path: Path | None = None) -> Policy:
    path = path or default_policy_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path}: {exc.strerror}") from exc
    key = hashlib.sha256(data).hexdigest()
    parsed = _PARSED.get(key)
    if parsed is not None:
        return parsed
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_YAML_LOADER)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"policy {path} is not valid YAML: {exc}") from exc
    try:
        policy = Policy.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        raise PolicyError(f"invalid policy {path}: {exc}") from exc
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = policy
    return policy
