"""The approval workflow on a real embedded MLflow registry (SQLite) and the serving gate."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from governance.approvals import (
    AliasNotAllowed,
    ApprovalError,
    Gate,
    PolicyNotSatisfied,
    RegistryError,
    SelfApproval,
    VersionRevoked,
    Workflow,
    clear_gate_cache,
    gate,
    registry_client,
)
from governance.audit import AuditLog
from governance.auth import PermissionDenied
from governance.testing import GOOD_METRICS, Cast, copy_store, create_cast, create_version

NAME = "cxr-pneumonia"


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite store, copied into each test's RADGATE_HOME (migrating takes
    seconds)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def registry(mlflow_template: Path, radgate_home: Path) -> Iterator[object]:
    copy_store(mlflow_template, radgate_home)
    clear_gate_cache()
    yield registry_client()
    clear_gate_cache()


@pytest.fixture()
def cast() -> Cast:
    return create_cast()


def _submitted(registry: object, cast: Cast, **kwargs: object) -> tuple[str, Path, Workflow]:
    version, artifact = create_version(registry, NAME, **kwargs)  # type: ignore[arg-type]
    workflow = Workflow(registry)  # type: ignore[arg-type]
    workflow.submit(cast["eng"], NAME, version, "ready for review")
    return version, artifact, workflow


def _approved(registry: object, cast: Cast, **kwargs: object) -> tuple[str, Path, Workflow]:
    version, artifact, workflow = _submitted(registry, cast, **kwargs)
    workflow.approve(cast["doc"], NAME, version, "clinically sound")
    workflow.approve(cast["eng2"], NAME, version, "pipeline reviewed")
    return version, artifact, workflow


def test_full_flow_reaches_production_only_through_the_policy(registry: object, cast: Cast) -> None:
    version, _, workflow = _submitted(registry, cast)
    assert workflow.status(NAME, version).status == "pending"
    with pytest.raises(PolicyNotSatisfied):
        workflow.promote(cast["eng"], NAME, version, "production")
    assert not gate(NAME, "production").allowed
    workflow.approve(cast["doc"], NAME, version, "clinically sound")
    with pytest.raises(PolicyNotSatisfied) as refused:
        workflow.promote(cast["eng"], NAME, version, "production")
    assert [i.name for i in refused.value.checklist.failures] == ["approved by ml-engineer"]
    outcome = workflow.approve(cast["eng2"], NAME, version, "pipeline reviewed")
    assert outcome.checklist.passed and outcome.checklist.status == "approved"
    workflow.promote(cast["eng"], NAME, version, "production")

    mv = registry.get_model_version_by_alias(NAME, "production")  # type: ignore[attr-defined]
    assert str(mv.version) == version
    assert mv.tags["radgate.status"].startswith("approved")
    decisions = {k: v for k, v in mv.tags.items() if k.startswith("radgate.decision.")}
    assert len(decisions) == 2 and all('"artifact_sha256"' in v for v in decisions.values())
    decision = gate(NAME, "production", fresh=True)
    assert decision.allowed and decision.version == version and decision.reasons == []
    assert decision.artifact_sha256 == mv.tags["radgate.artifact_sha256"]
    actions = [e.action for e in AuditLog().entries(target_prefix=f"model:{NAME}/")]
    assert actions == [
        "model.submit",
        "model.promote.refused",
        "model.approve",
        "model.promote.refused",
        "model.approve",
        "model.promote",
    ]
    assert AuditLog().verify().ok


def test_two_person_rule_two_clinicians_are_not_an_ml_lead(registry: object, cast: Cast) -> None:
    version, _, workflow = _submitted(registry, cast)
    workflow.approve(cast["doc"], NAME, version)
    workflow.approve(cast["doc2"], NAME, version)
    workflow.approve(cast["doc"], NAME, version)  # approving twice counts once
    checklist = workflow.status(NAME, version)
    assert not checklist.passed
    assert [i.name for i in checklist.failures] == ["approved by ml-engineer"]


def test_self_approval_refused(registry: object, cast: Cast) -> None:
    version, _, workflow = _submitted(registry, cast)
    with pytest.raises(SelfApproval):
        workflow.approve(cast["eng"], NAME, version)
    workflow.approve(cast["doc"], NAME, version)
    assert not workflow.status(NAME, version).passed


def test_failing_threshold_blocks_promotion(registry: object, cast: Cast) -> None:
    metrics = {**GOOD_METRICS, "test_ece": 0.25}
    version, _, workflow = _approved(registry, cast, metrics=metrics)
    with pytest.raises(PolicyNotSatisfied) as refused:
        workflow.promote(cast["eng"], NAME, version, "production")
    failed = refused.value.checklist.failures
    assert [(i.name, i.value) for i in failed] == [("calibration_ece", 0.25)]
    assert not registry.get_model_version(NAME, version).aliases  # type: ignore[attr-defined]


def test_missing_evidence_blocks_promotion(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast, tags={"radgate.saliency_sanity": "failed"})
    failures = {i.name: i for i in workflow.status(NAME, version).failures}
    assert set(failures) == {"saliency_sanity", "dataset_deidentified"}
    assert failures["dataset_deidentified"].detail == "missing"


def test_rejection_blocks_until_the_reviewer_changes_their_mind(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    workflow.reject(cast["doc2"], NAME, version, "subgroup gap in site B looks off")
    assert workflow.status(NAME, version).status == "rejected"
    with pytest.raises(PolicyNotSatisfied):
        workflow.promote(cast["eng"], NAME, version, "production")
    workflow.approve(cast["doc2"], NAME, version, "re-checked, fine")
    workflow.promote(cast["eng"], NAME, version, "production")


def test_revoke_makes_the_gate_deny_and_removes_the_alias(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    cached_gate = Gate(registry, ttl_s=3600, probe_s=3600)  # type: ignore[arg-type]
    probing_gate = Gate(registry, ttl_s=3600, probe_s=0)  # type: ignore[arg-type]
    assert cached_gate(NAME, "production").allowed and probing_gate(NAME, "production").allowed
    assert probing_gate(NAME, "production").cached  # nothing new in the audit log: cached
    workflow.revoke(cast["doc"], NAME, version, "adverse event")
    assert cached_gate(NAME, "production").cached  # unprobed, within the TTL: the cached answer...
    # ...while a gate that probes the audit log sees the revocation and decides again: denied
    # within its TTL, without fresh=True (a serving replica's revoke-to-refusal time)
    probed = probing_gate(NAME, "production")
    assert not probed.allowed and not probed.cached
    denied = cached_gate(NAME, "production", fresh=True)  # ...and a fresh check denies
    assert not denied.allowed and "not set" in denied.reasons[0]
    pinned = gate(NAME, version=version, fresh=True)
    assert not pinned.allowed and any(r.startswith("not revoked") for r in pinned.reasons)
    assert workflow.status(NAME, version).status == "revoked"
    with pytest.raises(VersionRevoked):
        workflow.approve(cast["doc2"], NAME, version)
    with pytest.raises(PolicyNotSatisfied):
        workflow.promote(cast["eng"], NAME, version, "production")


def test_artifact_swapped_after_approval_is_denied(registry: object, cast: Cast) -> None:
    version, artifact, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    assert gate(NAME, "production").allowed
    (artifact / "model.bin").write_bytes(b"swapped weights")
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed
    assert any(r.startswith("artifact unchanged") for r in decision.reasons)
    # Resubmitting the new artifact voids the old approvals: they were for another artifact.
    workflow.submit(cast["eng"], NAME, version, "new weights")
    checklist = workflow.status(NAME, version)
    assert not checklist.passed
    assert "approved another artifact" in next(i for i in checklist.failures if i.kind == "approval").detail


def test_weights_swapped_behind_a_recorded_hash_are_denied_by_a_new_replica(
    registry: object, cast: Cast
) -> None:
    """A deploy-time check leaves a MACed record of the artifact's hash; a replica that starts
    later takes the hash from it instead of reading the weights. Weights overwritten with as
    many bytes and their modification time set back must still be denied by that replica."""
    from governance.approvals.digests import SETTLE_S, recorded_sha256

    version, artifact, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    weights = artifact / "model.bin"
    time.sleep(max(0.0, SETTLE_S + 0.05 - (time.time_ns() - weights.stat().st_ctime_ns) / 1e9))
    deployed = Gate(registry)(NAME, "production", fresh=True)  # type: ignore[arg-type]
    assert deployed.allowed
    assert recorded_sha256(artifact) == deployed.artifact_sha256
    assert Gate(registry)(NAME, "production").allowed  # type: ignore[arg-type]

    before = weights.stat()
    weights.write_bytes(bytes(before.st_size))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    replica = Gate(registry)(NAME, "production")  # type: ignore[arg-type]
    assert not replica.allowed
    assert any(r.startswith("artifact unchanged") for r in replica.reasons)


def test_alias_set_directly_in_mlflow_is_caught(registry: object, cast: Cast) -> None:
    v1, _, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, v1, "production")
    v2, _ = create_version(registry, NAME, payload=b"unreviewed")  # type: ignore[arg-type]
    registry.set_registered_model_alias(NAME, "production", v2)  # type: ignore[attr-defined]
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed and decision.version == v2
    assert any("not set by RadGate" in r for r in decision.reasons)
    # An approved version put back under an alias it was moved off outside RadGate is caught too.
    v3, _, _ = _approved(registry, cast, payload=b"v3")
    workflow.promote(cast["eng"], NAME, v3, "production")
    registry.set_registered_model_alias(NAME, "production", v1)  # type: ignore[attr-defined]
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed and any("not set by RadGate" in r for r in decision.reasons)
    workflow.promote(cast["eng"], NAME, v1, "production")
    assert gate(NAME, "production", fresh=True).allowed


def test_approval_tag_forged_in_mlflow_is_not_trusted(registry: object, cast: Cast) -> None:
    version, _, workflow = _submitted(registry, cast)
    workflow.approve(cast["doc"], NAME, version)
    forged = (
        '{"decision": "approve", "actor": "eng2", "role": "ml-engineer", "at": "2026-01-01T00:00:00+00:00"}'
    )
    registry.set_model_version_tag(NAME, version, "radgate.decision.0000009999", forged)  # type: ignore[attr-defined]
    checklist = workflow.status(NAME, version)
    assert {i.name for i in checklist.failures} == {"decisions authentic", "approved by ml-engineer"}


def test_deleting_the_revoke_tag_in_mlflow_does_not_undo_it(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    outcome = workflow.revoke(cast["eng2"], NAME, version)
    registry.delete_model_version_tag(NAME, version, f"radgate.decision.{outcome.audit_seq:010d}")  # type: ignore[attr-defined]
    registry.set_registered_model_alias(NAME, "production", version)  # type: ignore[attr-defined]
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed and any(r.startswith("not revoked") for r in decision.reasons)


def test_workflow_role_boundaries_both_ways(registry: object, cast: Cast) -> None:
    version, _ = create_version(registry, NAME)  # type: ignore[arg-type]
    workflow = Workflow(registry)  # type: ignore[arg-type]
    for who in ("doc", "admin", "auditor", "pacs", "broker", "steward"):
        with pytest.raises(PermissionDenied):
            workflow.submit(cast[who], NAME, version)
    with pytest.raises(ApprovalError):
        workflow.approve(cast["doc"], NAME, version)  # not submitted yet
    workflow.submit(cast["eng"], NAME, version)
    for who in ("admin", "auditor", "pacs", "broker", "steward"):
        with pytest.raises(PermissionDenied):
            workflow.approve(cast[who], NAME, version)
        with pytest.raises(PermissionDenied):
            workflow.reject(cast[who], NAME, version)
    workflow.approve(cast["doc"], NAME, version)
    workflow.approve(cast["eng2"], NAME, version)
    for who in ("doc", "auditor", "pacs", "broker", "steward"):
        with pytest.raises(PermissionDenied):
            workflow.promote(cast[who], NAME, version, "production")
    workflow.promote(cast["admin"], NAME, version, "staging")
    workflow.promote(cast["eng2"], NAME, version, "production")
    for who in ("auditor", "pacs", "broker", "steward"):
        with pytest.raises(PermissionDenied):
            workflow.revoke(cast[who], NAME, version)
    workflow.revoke(cast["admin"], NAME, version)
    assert not registry.get_model_version(NAME, version).aliases  # type: ignore[attr-defined]


def test_alias_outside_the_policy_is_refused(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    with pytest.raises(AliasNotAllowed):
        workflow.promote(cast["eng"], NAME, version, "champion")
    registry.set_registered_model_alias(NAME, "champion", version)  # type: ignore[attr-defined]
    assert "not allowed" in gate(NAME, "champion", fresh=True).reasons[0]


def test_approvals_expire(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    assert workflow.status(NAME, version).passed
    later = datetime.now(UTC) + timedelta(days=366)
    checklist = workflow.status(NAME, version, now=later)
    assert not checklist.passed
    assert all("expired" in i.detail for i in checklist.failures)


def test_per_model_policy_override(
    registry: object, cast: Cast, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = yaml.safe_load(Path("configs/governance/policy.yaml").read_text())
    policy["models"] = {
        NAME: {"approvals": [{"role": "clinical-reviewer", "count": 2}, {"role": "ml-engineer", "count": 1}]}
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("RADGATE_POLICY", str(path))
    version, _, workflow = _approved(registry, cast)
    assert [i.name for i in workflow.status(NAME, version).failures] == ["approved by clinical-reviewer"]
    workflow.approve(cast["doc2"], NAME, version)
    assert workflow.status(NAME, version).passed


def test_gate_rehashes_the_artifact_after_its_own_ttl(registry: object, cast: Cast) -> None:
    version, artifact, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    long_hash = Gate(registry, ttl_s=0, artifact_ttl_s=3600)  # type: ignore[arg-type]
    always = Gate(registry, ttl_s=0, artifact_ttl_s=0)  # type: ignore[arg-type]
    assert long_hash(NAME, "production").allowed and always(NAME, "production").allowed
    (artifact / "model.bin").write_bytes(b"swapped")
    assert long_hash(NAME, "production").allowed  # hash still cached (bounded by artifact_ttl_s)
    assert not always(NAME, "production").allowed
    assert not long_hash(NAME, "production", fresh=True).allowed


def test_concurrent_requests_share_one_gate_decision(registry: object, cast: Cast) -> None:
    """When the cached decision has expired, concurrent callers wait for one registry query."""
    from concurrent.futures import ThreadPoolExecutor

    version, _, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")

    class CountingGate(Gate):
        decided = 0

        def _decide(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            CountingGate.decided += 1
            return super()._decide(*args, **kwargs)  # type: ignore[arg-type]

    counting = CountingGate(registry, ttl_s=3600)  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda _: counting(NAME, "production"), range(8)))
    assert all(d.allowed for d in decisions) and CountingGate.decided == 1
    assert sum(not d.cached for d in decisions) == 1
    assert not counting(NAME, "production", fresh=True).cached and CountingGate.decided == 2


def test_gate_fails_closed_on_unknown_model(registry: object) -> None:
    decision = gate("no-such-model", "production")
    assert not decision.allowed and decision.reasons
    with pytest.raises(ValueError):
        gate(NAME)


def test_artifact_must_match_the_registration_hash(registry: object, cast: Cast) -> None:
    from governance.approvals import hash_tree
    from governance.testing import GOOD_TAGS

    tags = {**GOOD_TAGS, "radgate.artifact_sha256": "0" * 64}
    version, artifact, workflow = _approved(registry, cast, tags=tags)
    failed = workflow.status(NAME, version).failures
    assert [(i.name, i.detail) for i in failed] == [("artifact as registered", "differs")]
    registry.set_model_version_tag(NAME, version, "radgate.artifact_sha256", hash_tree(artifact))  # type: ignore[attr-defined]
    assert workflow.status(NAME, version).passed


def test_a_version_whose_artifact_vanished_can_still_be_revoked(registry: object, cast: Cast) -> None:
    import shutil

    version, artifact, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    shutil.rmtree(artifact)
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed and any("unreadable" in r for r in decision.reasons)
    with pytest.raises(RegistryError):
        workflow.approve(cast["doc2"], NAME, version)
    workflow.revoke(cast["doc"], NAME, version, "artifact lost")
    assert workflow.status(NAME, version).status == "revoked"


def test_history_shows_who_did_what_with_verified_comments(registry: object, cast: Cast) -> None:
    version, _, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    history = workflow.history(NAME, version)
    assert [(h["actor"], h["action"]) for h in history] == [
        ("eng", "submit"),
        ("doc", "approve"),
        ("eng2", "approve"),
        ("eng", "promote"),
    ]
    assert history[1]["comment"] == "clinically sound" and history[3]["alias"] == "production"
    assert all(h["authentic"] for h in history)
    key = next(k for k in registry.get_model_version(NAME, version).tags if k.startswith("radgate.decision."))  # type: ignore[attr-defined]
    registry.set_model_version_tag(NAME, version, key, '{"comment": "edited in the MLflow UI"}')  # type: ignore[attr-defined]
    assert workflow.history(NAME, version)[1]["comment"] == ""  # an edited comment is not shown


def test_gate_fails_closed_on_a_damaged_audit_log(registry: object, cast: Cast) -> None:
    import sqlite3

    from governance.settings import get_settings

    version, _, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    assert gate(NAME, "production").allowed
    db = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    db.execute("UPDATE audit_log SET details='{not json' WHERE action='model.promote'")
    decision = gate(NAME, "production", fresh=True)
    assert not decision.allowed and decision.reasons[0].startswith("gate error")
    report = AuditLog().verify()
    assert (report.ok, report.problem) == (False, "altered")


def test_an_earlier_submitter_may_not_approve_after_a_resubmission(registry: object, cast: Cast) -> None:
    version, _, workflow = _submitted(registry, cast)  # submitted by eng
    workflow.submit(cast["eng2"], NAME, version, "resubmitted")
    with pytest.raises(SelfApproval):
        workflow.approve(cast["eng"], NAME, version)
    with pytest.raises(SelfApproval):
        workflow.approve(cast["eng2"], NAME, version)


def test_warm_up_caches_no_decision_and_a_swap_after_it_is_caught(registry: object, cast: Cast) -> None:
    version, artifact, workflow = _approved(registry, cast)
    workflow.promote(cast["eng"], NAME, version, "production")
    replica = Gate(registry, ttl_s=3600, artifact_ttl_s=3600)  # type: ignore[arg-type]
    replica.warm_up()
    (artifact / "model.bin").write_bytes(b"swapped before the first request")
    first = replica(NAME, "production")  # the first decision still reads the artifact
    assert not first.allowed and not first.cached
    assert any(r.startswith("artifact unchanged") for r in first.reasons)


def test_a_replica_fails_closed_at_once_when_the_registry_is_down(
    radgate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's default HTTP retries held this decision for about four minutes; warm_up bounds
    them for a serving process (unless the operator set them) and the decision is a denial."""
    from governance.approvals.registry import REQUEST_PATH_HTTP

    for name in REQUEST_PATH_HTTP:
        monkeypatch.setenv(name, "unset-by-the-test")
        monkeypatch.delenv(name)
    replica = Gate(registry_client("http://127.0.0.1:9"))  # nothing listens on the discard port
    replica.warm_up()
    assert {name: os.environ.get(name) for name in REQUEST_PATH_HTTP} == REQUEST_PATH_HTTP
    from mlflow import environment_variables as mlflow_env

    for name in REQUEST_PATH_HTTP:  # each value is one MLflow can read (its own types)
        getattr(mlflow_env, name).get()
    decision = replica(NAME, "production")
    assert not decision.allowed
    assert any("gate error" in r and "Connection refused" in r for r in decision.reasons), decision.reasons


def test_the_operators_http_limits_are_kept(radgate_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from governance.approvals.registry import bound_registry_http

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    bound_registry_http()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
