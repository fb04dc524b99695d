"""Policy file validation and the checklist evaluation (pure, no MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from governance.auth import Role
from governance.policy import (
    Decision,
    DecisionKind,
    Evidence,
    ModelPolicy,
    Policy,
    PolicyError,
    Submission,
    evaluate,
    load_policy,
)

REPO_POLICY = Path(__file__).resolve().parents[2] / "configs" / "governance" / "policy.yaml"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SHA = "a" * 64


def _raw() -> dict[str, Any]:
    return yaml.safe_load(REPO_POLICY.read_text())


def _write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_policy_is_valid_and_requires_two_roles() -> None:
    policy = load_policy(REPO_POLICY)
    default = policy.default
    assert {a.role for a in default.approvals} == {Role.CLINICAL_REVIEWER, Role.ML_ENGINEER}
    assert not default.submitter_may_approve and default.distinct_approvers
    assert "production" in default.allowed_aliases
    assert {c.name for c in default.checks} >= {"test_auroc", "calibration_ece", "saliency_sanity"}
    assert len(policy.sha256) == 64


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["default"]["approvals"].append({"role": "superuser"}), "role"),
        (lambda r: r["default"]["approvals"].append({"role": "ml-engineer"}), "once"),
        (lambda r: r["default"]["checks"][0].update(threshold="high"), "number"),
        (lambda r: r["default"]["checks"][5].update(op=">="), "text thresholds"),
        (lambda r: r["default"].update(allowed_aliases=["latest"]), "alias"),
        (lambda r: r["default"].update(approval_valid_days=0), "greater than 0"),
        (lambda r: r["default"].update(approvals=[]), "at least 1"),
        (lambda r: r["default"].update(surprise=True), "Extra inputs"),
        (lambda r: r.update(models={"m": {"approval_valid_days": -1}}), "model 'm'"),
        (lambda r: r.update(version=2), "version"),
    ],
)
def test_invalid_policies_are_refused_with_a_reason(tmp_path: Path, mutate: Any, message: str) -> None:
    raw = _raw()
    mutate(raw)
    with pytest.raises(PolicyError, match=message):
        load_policy(_write(tmp_path, raw))


def test_unreadable_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: [unclosed")
    with pytest.raises(PolicyError, match="YAML"):
        load_policy(bad)


def test_model_override_merges_onto_default() -> None:
    raw = _raw()
    raw["models"] = {"special": {"approval_valid_days": 30, "allowed_aliases": ["shadow"]}}
    policy = Policy.model_validate(raw)
    special = policy.for_model("special")
    assert special.approval_valid_days == 30 and special.allowed_aliases == ["shadow"]
    assert special.checks == policy.default.checks
    assert policy.for_model("other") == policy.default


def _policy(**changes: Any) -> ModelPolicy:
    return load_policy(REPO_POLICY).default.model_copy(update=changes)


def _evidence(
    decisions: list[Decision], *, metrics: dict[str, float] | None = None, sha: str = SHA
) -> Evidence:
    return Evidence(
        name="m",
        version="1",
        artifact_sha256=sha,
        submission=Submission("sub", NOW - timedelta(days=2), SHA),
        decisions=decisions,
        metrics=metrics
        if metrics is not None
        else {
            "test_auroc": 0.9,
            "test_sensitivity": 0.9,
            "max_subgroup_gap": 0.01,
            "test_ece": 0.02,
        },
        tags={"radgate.saliency_sanity": "PASSED", "radgate.dataset.deidentified": "true"},
    )


def _d(seq: int, kind: str, actor: str, role: Role, days_ago: float = 1, sha: str = SHA) -> Decision:
    return Decision(seq, DecisionKind(kind), actor, role, NOW - timedelta(days=days_ago), sha)


GOOD = [_d(1, "approve", "doc", Role.CLINICAL_REVIEWER), _d(2, "approve", "eng", Role.ML_ENGINEER)]


def test_all_requirements_pass_with_values() -> None:
    checklist = evaluate(_policy(), _evidence(GOOD), NOW)
    assert checklist.passed and checklist.status == "approved"
    by_name = {i.name: i for i in checklist.items}
    assert by_name["test_auroc"].value == 0.9 and by_name["approved by ml-engineer"].value == ["eng"]
    assert checklist.to_dict()["items"][0]["name"] == "submitted"


def test_submitter_approval_is_void_unless_policy_allows() -> None:
    decisions = [GOOD[0], _d(2, "approve", "sub", Role.ML_ENGINEER)]
    checklist = evaluate(_policy(), _evidence(decisions), NOW)
    assert "submitter may not approve" in checklist.failures[0].detail
    assert evaluate(_policy(submitter_may_approve=True), _evidence(decisions), NOW).passed


def test_latest_decision_per_person_counts() -> None:
    flip = [*GOOD, _d(3, "reject", "doc", Role.CLINICAL_REVIEWER)]
    assert evaluate(_policy(), _evidence(flip), NOW).status == "rejected"
    back = [*flip, _d(4, "approve", "doc", Role.CLINICAL_REVIEWER)]
    assert evaluate(_policy(), _evidence(back), NOW).passed


def test_revocation_is_final() -> None:
    decisions = [*GOOD, _d(3, "revoke", "eng", Role.ML_ENGINEER), _d(4, "approve", "eng", Role.ML_ENGINEER)]
    assert evaluate(_policy(), _evidence(decisions), NOW).status == "revoked"


def test_expired_and_other_artifact_approvals_do_not_count() -> None:
    old = [_d(1, "approve", "doc", Role.CLINICAL_REVIEWER, days_ago=400), GOOD[1]]
    assert "expired" in evaluate(_policy(), _evidence(old), NOW).failures[0].detail
    other = [_d(1, "approve", "doc", Role.CLINICAL_REVIEWER, sha="b" * 64), GOOD[1]]
    assert "another artifact" in evaluate(_policy(), _evidence(other), NOW).failures[0].detail


def test_artifact_changed_since_submission_fails() -> None:
    checklist = evaluate(_policy(), _evidence(GOOD, sha="c" * 64), NOW)
    assert "artifact unchanged" in {i.name for i in checklist.failures}


def test_unconfirmed_decision_fails_the_checklist() -> None:
    fake = Decision(9, DecisionKind.APPROVE, "x", Role.ML_ENGINEER, NOW, SHA, confirmed=False)
    checklist = evaluate(_policy(), _evidence([GOOD[0], fake]), NOW)
    assert {i.name for i in checklist.failures} == {"decisions authentic", "approved by ml-engineer"}


@pytest.mark.parametrize(
    ("metric", "value", "passed"),
    [
        ("test_auroc", 0.80, True),
        ("test_auroc", 0.7999, False),
        ("test_ece", 0.1, True),
        ("test_ece", 0.11, False),
    ],
)
def test_threshold_boundaries(metric: str, value: float, passed: bool) -> None:
    metrics = {
        "test_auroc": 0.9,
        "test_sensitivity": 0.9,
        "max_subgroup_gap": 0.0,
        "test_ece": 0.0,
    }
    metrics[metric] = value
    checklist = evaluate(_policy(), _evidence(GOOD, metrics=metrics), NOW)
    assert checklist.passed is passed


def test_missing_metric_is_a_failure_not_an_error() -> None:
    checklist = evaluate(_policy(), _evidence(GOOD, metrics={}), NOW)
    assert {i.detail for i in checklist.failures} == {"missing"}
