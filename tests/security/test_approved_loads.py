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
