"""Evaluate a model version's evidence against its policy: a checklist, item by item.

Pure (no MLflow, no database): :mod:`governance.approvals` gathers the :class:`Evidence`
(decisions already cross-checked against the audit log) and calls :func:`evaluate`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from governance.auth.roles import Role
from governance.policy.schema import TASK_TAG, Check, CheckSource, Comparison, ModelPolicy
from governance.tags import Tag

# Set by training at registration (training.registry.artifact_sha256, same tree hash).
REGISTRATION_HASH_TAG = Tag.ARTIFACT_SHA256

__all__ = [
    "REGISTRATION_HASH_TAG",
    "Checklist",
    "Decision",
    "DecisionKind",
    "Evidence",
    "Requirement",
    "Submission",
    "evaluate",
]


class DecisionKind(enum.StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVOKE = "revoke"


@dataclass(frozen=True)
class Submission:
    actor: str
    at: datetime
    artifact_sha256: str
    confirmed: bool = True  # matches its audit entry


@dataclass(frozen=True)
class Decision:
    """One reviewer decision on one version (a model-version tag, confirmed by the audit log)."""

    seq: int
    kind: DecisionKind
    actor: str
    role: Role
    at: datetime
    artifact_sha256: str
    comment: str = ""
    confirmed: bool = True


@dataclass(frozen=True)
class Evidence:
    """Everything the policy looks at for one model version."""

    name: str
    version: str
    artifact_sha256: str | None
    submission: Submission | None
    decisions: list[Decision]
    metrics: dict[str, float]
    tags: dict[str, str]
    # Everyone who ever submitted this version (a resubmission does not clear the first
    # submitter's conflict of interest).
    submitters: frozenset[str] = frozenset()

    def is_submitter(self, actor: str) -> bool:
        return actor in self.submitters or (self.submission is not None and self.submission.actor == actor)


@dataclass(frozen=True)
class Requirement:
    """One line of the checklist."""

    kind: str  # submission | artifact | decision | approval | check
    name: str
    passed: bool
    value: Any
    expected: str
    detail: str = ""


@dataclass
class Checklist:
    name: str
    version: str
    items: list[Requirement] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.items) and all(item.passed for item in self.items)

    @property
    def failures(self) -> list[Requirement]:
        return [item for item in self.items if not item.passed]

    @property
    def status(self) -> str:
        """not-submitted | revoked | rejected | approved | pending."""
        by_name = {item.name: item for item in self.items}
        if not by_name["submitted"].passed:
            return "not-submitted"
        if not by_name["not revoked"].passed:
            return "revoked"
        if not by_name["no rejection"].passed:
            return "rejected"
        return "approved" if self.passed else "pending"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "passed": self.passed,
            "items": [
                {
                    "kind": i.kind,
                    "name": i.name,
                    "passed": i.passed,
                    "value": i.value,
                    "expected": i.expected,
                    "detail": i.detail,
                }
                for i in self.items
            ],
        }


def _check(check: Check, evidence: Evidence) -> Requirement:
    if check.is_prefix:
        return _check_every(check, evidence)
    raw: Any
    if check.source is CheckSource.METRIC:
        raw = evidence.metrics.get(check.key)
    else:
        raw = evidence.tags.get(check.key)
    if raw is None:
        return Requirement("check", check.name, False, None, check.describe(), "missing")
    threshold = check.threshold
    value: Any = raw
    if isinstance(threshold, float | int) and not isinstance(threshold, bool):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return Requirement("check", check.name, False, raw, check.describe(), "not a number")
    else:
        value, threshold = str(raw).strip().lower(), str(threshold).strip().lower()
    return Requirement("check", check.name, check.op.holds(value, threshold), raw, check.describe())


def _check_every(check: Check, evidence: Evidence) -> Requirement:
    """A prefix key: each matching value must hold; the first failing (or the worst) is reported."""
    source = evidence.metrics if check.source is CheckSource.METRIC else evidence.tags
    prefix = check.key[:-1]
    matched = {key: value for key, value in sorted(source.items()) if key.startswith(prefix)}
    if not matched:
        return Requirement("check", check.name, False, None, check.describe(), "missing")
    results = {key: _check(check.model_copy(update={"key": key}), evidence) for key in matched}
    failed = [key for key, item in results.items() if not item.passed]
    shown = [results[key] for key in failed] if failed else list(results.values())
    numbers = [float(r.value) for r in shown if isinstance(r.value, int | float)]
    lower_is_worse = check.op in (Comparison.GE, Comparison.GT)
    worst = (min(numbers) if lower_is_worse else max(numbers)) if numbers else shown[0].value
    if failed:
        detail = "; ".join(f"{key}={results[key].value}" for key in failed)
        return Requirement("check", check.name, False, worst, check.describe(), detail)
    return Requirement(
        "check", check.name, True, worst, check.describe(), f"{len(matched)} values, worst shown"
    )


def evaluate(policy: ModelPolicy, evidence: Evidence, now: datetime) -> Checklist:
    """The checklist of ``policy`` for ``evidence`` at time ``now``."""
    items: list[Requirement] = []
    sub = evidence.submission
    items.append(
        Requirement(
            "submission",
            "submitted",
            sub is not None and sub.confirmed,
            sub.actor if sub else None,
            "submitted for review through RadGate",
            "" if sub is None or sub.confirmed else "submission tag not confirmed by the audit log",
        )
    )
    current = evidence.artifact_sha256
    artifact_ok = current is not None and sub is not None and sub.artifact_sha256 == current
    items.append(
        Requirement(
            "artifact",
            "artifact unchanged",
            artifact_ok,
            current,
            f"sha256 == {sub.artifact_sha256 if sub else '(submitted hash)'}",
            ""
            if artifact_ok
            else "artifact unreadable"
            if current is None
            else "not submitted"
            if sub is None
            else "artifact changed since submission",
        )
    )

    registered = evidence.tags.get(REGISTRATION_HASH_TAG)
    items.append(
        Requirement(
            "artifact",
            "artifact as registered",
            registered is None or registered == current,
            registered,
            "registration tag == current sha256",
            "no registration hash recorded"
            if registered is None
            else ""
            if registered == current
            else "differs",
        )
    )

    unconfirmed = [d for d in evidence.decisions if not d.confirmed]
    decisions = sorted((d for d in evidence.decisions if d.confirmed), key=lambda d: d.seq)
    items.append(
        Requirement(
            "decision",
            "decisions authentic",
            not unconfirmed,
            len(unconfirmed),
            "every decision tag matches an audit entry",
            ", ".join(f"#{d.seq} by {d.actor}" for d in unconfirmed),
        )
    )
    revokes = [d for d in decisions if d.kind is DecisionKind.REVOKE]
    items.append(
        Requirement(
            "decision",
            "not revoked",
            not revokes,
            revokes[0].actor if revokes else None,
            "no revocation",
            f"revoked by {revokes[0].actor} at {revokes[0].at.isoformat()}" if revokes else "",
        )
    )
    latest: dict[str, Decision] = {}
    for d in decisions:
        if d.kind is not DecisionKind.REVOKE:
            latest[d.actor] = d  # a reviewer's newer decision replaces their older one
    rejections = [d for d in latest.values() if d.kind is DecisionKind.REJECT]
    items.append(
        Requirement(
            "decision",
            "no rejection",
            not rejections,
            [d.actor for d in rejections] or None,
            "no reviewer's latest decision is a rejection",
        )
    )

    valid_for = timedelta(days=policy.approval_valid_days)
    used: set[str] = set()
    for need in policy.approvals:
        counted: list[str] = []
        void: list[str] = []
        for d in latest.values():
            if d.kind is not DecisionKind.APPROVE or d.role is not need.role:
                continue
            if evidence.is_submitter(d.actor) and not policy.submitter_may_approve:
                void.append(f"{d.actor}: submitter may not approve")
            elif d.artifact_sha256 != current:
                void.append(f"{d.actor}: approved another artifact")
            elif now - d.at > valid_for:
                void.append(f"{d.actor}: approval expired")
            elif policy.distinct_approvers and d.actor in used:
                void.append(f"{d.actor}: already counted for another role")
            else:
                counted.append(d.actor)
        counted = counted[: need.count]
        used.update(counted)
        items.append(
            Requirement(
                "approval",
                f"approved by {need.role.value}",
                len(counted) >= need.count,
                counted,
                f"{need.count} distinct {need.role.value}",
                "; ".join(void),
            )
        )
    task = evidence.tags.get(TASK_TAG)
    items.extend(_check(check, evidence) for check in policy.checks if check.applies_to(task))
    return Checklist(evidence.name, evidence.version, items)
