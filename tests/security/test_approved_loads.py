"""Monitoring replay, the monitor process and retraining load models only as the gate allows:
a revoked or never approved version is refused (it was loaded directly from the registry)."""

from __future__ import annotations

import pytest

from governance.approvals import Workflow, clear_gate_cache
from governance.testing import create_cast
from serving.approved import NotApproved, load_approved
from serving.monitoring.retrain import retrain
from serving.testing import approve_and_promote, register_model


def test_revoked_or_unapproved_versions_are_not_loaded_for_monitoring_or_retraining() -> None:
    cast = create_cast()
    pending = register_model("pending-cxr", seed=1)
    with pytest.raises(NotApproved):
        load_approved(f"pending-cxr/{pending}")
    with pytest.raises(NotApproved):
        retrain(cast["eng"], "pending-cxr", version=pending)

    version = register_model("cxr")
    approve_and_promote("cxr", version, cast)
    clear_gate_cache()
    assert load_approved("cxr@production").version == version
    Workflow().revoke(cast["doc"], "cxr", version, "recall")
    clear_gate_cache()
    with pytest.raises(NotApproved):
        load_approved(f"cxr/{version}")
    with pytest.raises(NotApproved):
        retrain(cast["eng"], "cxr", version=version)


def test_explain_of_a_serving_alias_needs_the_gate() -> None:
    import typer

    from training.explain.cli import _gate_alias

    cast = create_cast()
    version = register_model("cxr-x")
    approve_and_promote("cxr-x", version, cast)
    clear_gate_cache()
    _gate_alias("cxr-x@production")  # allowed: explained
    _gate_alias(f"cxr-x/{version}")  # a pinned candidate is explained as such
    Workflow().revoke(cast["doc"], "cxr-x", version, "recall")
    from governance.approvals import registry_client

    registry_client().set_registered_model_alias("cxr-x", "production", version)  # set outside RadGate
    clear_gate_cache()
    with pytest.raises(typer.Exit):
        _gate_alias("cxr-x@production")
