"""Serving runs drift checks periodically when its config says so (``drift:``): the scheduler the
ingress starts checks the served models on a short interval, audits the check and the alert,
and the gauges appear on the serving API's ``/metrics``. Real catalog, MLflow (SQLite), audit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODEL = "sched-chest"
LABELS = ["no_finding", "opacity"]


def _rows(
    rng: np.random.Generator, n: int, gain: float
) -> list[tuple[np.ndarray, dict[str, Any], list[float]]]:
    cases = []
    for _ in range(n):
        score = float(rng.beta(2, 5))
        cases.append(
            (rng.gamma(4.0, 250.0 * gain, size=(16, 16)), {"manufacturer": "GE"}, [1 - score, score])
        )
    return cases


def _served_version_with_profile() -> str:
    from mlflow import MlflowClient

    from governance.settings import get_settings
    from training.reference_profile import live_feature_row, log_reference_profile, profile_from_rows

    rng = np.random.default_rng(0)
    rows = [live_feature_row(image, attrs, scores, LABELS) for image, attrs, scores in _rows(rng, 200, 1.0)]
    profile = profile_from_rows(rows, rng.normal(size=(200, 8)), LABELS, embedding_dims=4)
    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(uri, uri)
    run_id = client.create_run(client.create_experiment("drift-schedule")).info.run_id
    log_reference_profile(run_id, profile, tracking_uri=uri)
    client.create_registered_model(MODEL)
    client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id)
    return run_id


def test_serve_config_drift_schedule_is_validated() -> None:
    from serving.config import ServeConfig

    ok = ServeConfig.model_validate({"models": [{"name": "a"}], "drift": {"interval_s": 60, "window": "6h"}})
    assert ok.drift is not None and ok.drift.models is None
    for bad in ({"models": ["b"]}, {"window": "0h"}, {"window": "soon"}, {"interval_s": 0}):
        with pytest.raises(ValueError):
            ServeConfig.model_validate({"models": [{"name": "a"}], "drift": bad})


def test_serving_runs_drift_checks_on_its_interval(
    radgate_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from governance.audit import AuditLog
    from governance.catalog import open_catalog
    from governance.testing import create_cast
    from serving.api import api
    from serving.config import ServeConfig
    from serving.monitoring import LiveRecorder
    from serving.monitoring.job import start_serving_drift
    from serving.monitoring.models import DriftRun

    monitoring = tmp_path / "monitoring.yaml"
    monitoring.write_text("drift: {min_samples: 20, permutations: 200}\n")
    monkeypatch.setenv("RADGATE_MONITORING_CONFIG", str(monitoring))
    run_id = _served_version_with_profile()
    recorder = LiveRecorder.for_run(MODEL, "1", run_id)
    rng = np.random.default_rng(1)
    for i, (image, attrs, scores) in enumerate(_rows(rng, 40, 2.5)):  # a gain change: brighter images
        recorder.record(f"sched-{i:03d}", image, attrs, scores, rng.normal(size=8))

    config = ServeConfig.model_validate(
        {"models": [{"name": MODEL, "version": "1"}], "drift": {"interval_s": 1, "window": "1h"}}
    )
    assert start_serving_drift(config.model_copy(update={"drift": None})) is None
    scheduler = start_serving_drift(config)
    assert scheduler is not None
    try:
        deadline = time.monotonic() + 90
        runs: list[DriftRun] = []
        while not runs and time.monotonic() < deadline:
            time.sleep(0.5)
            with open_catalog().session() as session:
                runs = list(session.execute(select(DriftRun).where(DriftRun.model_name == MODEL)).scalars())
    finally:
        scheduler.stop()
    assert runs, "no drift check ran"
    assert runs[0].drifted and runs[0].model_version == "1"
    assert any(f.startswith("intensity") for f in runs[0].summary["drifted_features"])

    entries = [(e.action, e.actor, e.target) for e in AuditLog().entries()]
    assert ("monitoring.drift.checked", "radgate-monitor", f"model:{MODEL}/1") in entries
    assert ("monitoring.drift.alert", "radgate-monitor", f"model:{MODEL}/1") in entries

    cast = create_cast()
    http = TestClient(api)
    assert http.get("/metrics", headers={"Authorization": f"Bearer {cast.tokens['pacs']}"}).status_code == 403
    metrics = http.get("/metrics", headers={"Authorization": f"Bearer {cast.tokens['eng']}"})
    assert metrics.status_code == 200
    assert f'radgate_drift_alert{{model="{MODEL}"}} 1.0' in metrics.text
    assert f'radgate_drift_live_samples{{model="{MODEL}"}} 40.0' in metrics.text
    assert "radgate_serve_requests" in metrics.text  # the ingress's own metrics are still there
