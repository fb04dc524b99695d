"""Feedback and sealed inputs on the real catalog: the input is sealed at rest, kept only when
feedback arrives and the monitoring config allows it, purged when the feedback window passes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from governance.catalog import utcnow
from governance.testing import create_cast
from imaging.demo_data import write_demo_studies
from serving.monitoring import (
    FeedbackIn,
    LiveRecorder,
    MonitoringConfig,
    purge_expired_inputs,
    submit_feedback,
)
from serving.monitoring.feedback import InputStatus, UnknownRequest
from serving.monitoring.live import MonitoringError, pending_input_path, read_pending_input
from training.reference_profile import live_feature_row, profile_from_rows

LABELS = ["no_finding", "opacity"]


@pytest.fixture()
def recorder() -> LiveRecorder:
    rng = np.random.default_rng(0)
    rows = [
        live_feature_row(rng.random((8, 8)), {"manufacturer": "GE"}, [0.7, 0.3], LABELS) for _ in range(20)
    ]
    profile = profile_from_rows(rows, rng.normal(size=(20, 6)), LABELS, embedding_dims=3)
    return LiveRecorder("chest", "1", profile)


def _record(recorder: LiveRecorder, request_id: str, data: bytes | None, **kw: Any) -> None:
    rng = np.random.default_rng(1)
    recorder.record(request_id, rng.random((8, 8)), {"manufacturer": "GE"}, [0.2, 0.8], rng.normal(size=6),
                    input_bytes=data, **kw)  # fmt: skip


def test_input_is_sealed_and_not_kept_when_policy_says_no(recorder: LiveRecorder, tmp_path: Path) -> None:
    data = write_demo_studies(tmp_path, patients=1, images_per_patient=1, size=16).files[0].read_bytes()
    _record(recorder, "req-a", data)
    sealed = pending_input_path("req-a").read_bytes()
    assert data[128:] not in sealed and b"DICM" not in sealed  # encrypted at rest
    assert read_pending_input("req-a") == data
    doc = create_cast()["doc"]
    no_keep = MonitoringConfig.model_validate({"feedback": {"keep_inputs": False}})
    out = submit_feedback(
        doc, FeedbackIn.model_validate({"request_id": "req-a", "agree": True}), config=no_keep
    )
    assert out.input_status is InputStatus.NOT_KEPT_BY_POLICY and out.instance_sha256 is None
    assert out.label == "opacity"  # agreeing keeps the predicted label
    assert not pending_input_path("req-a").exists()
    with pytest.raises(UnknownRequest):
        submit_feedback(doc, FeedbackIn.model_validate({"request_id": "req-zzz", "agree": True}))


def test_expired_inputs_are_purged(recorder: LiveRecorder) -> None:
    _record(recorder, "req-old", b"not even dicom", at=utcnow() - timedelta(days=10))
    _record(recorder, "req-new", b"kept for now")
    assert purge_expired_inputs() == 1
    assert not pending_input_path("req-old").exists()
    assert read_pending_input("req-new") == b"kept for now"


def test_request_ids_are_checked(recorder: LiveRecorder) -> None:
    with pytest.raises(MonitoringError):
        _record(recorder, "../../etc/passwd", None)


def test_what_the_ui_may_show_is_sealed_kept_by_policy_and_purged(recorder: LiveRecorder) -> None:
    from serving.monitoring.live import read_view

    overlay = {"method": "gradcam", "png_base64": "iVBORw0KGgo="}
    result = {"labels": LABELS, "decision": {"label": "opacity"}, "summary": "Finding: opacity",
              "explanation": overlay, "probabilities": [0.2, 0.8]}  # fmt: skip
    _record(recorder, "req-v", None, view=result)
    assert read_view("req-v") == {k: result[k] for k in ("labels", "decision", "summary", "explanation")}
    assert b"Finding" not in next((recorder.settings.home / "monitoring" / "views").iterdir()).read_bytes()
    recorder.config = MonitoringConfig.model_validate({"feedback": {"keep_inputs": False}})
    _record(recorder, "req-w", None, view=result)
    assert read_view("req-w") == {
        "labels": LABELS,
        "decision": {"label": "opacity"},
        "summary": "Finding: opacity",
    }
    assert read_view("req-none") is None
    assert purge_expired_inputs(now=utcnow() + timedelta(days=30)) == 2
    assert read_view("req-v") is None and read_view("req-w") is None
