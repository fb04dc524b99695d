"""Monitoring end to end on the real catalog and MLflow (SQLite): reference profile from real
de-identified DICOM under a small network, live requests recorded as serving does, drift checks
(unshifted: no alert; intensity and new-manufacturer shifts: alert, audit, gauge, signed webhook),
the CLI, and feedback through ``POST /v1/feedback`` with real tokens into a new dataset version."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.integration

MODEL = "chest-monitor"
LABELS = ("no_finding", "opacity")
SPEC_SIZE = (32, 32)


class TinyNet(torch.nn.Module):
    """A small CNN ending in Linear -> ReLU -> Linear, like MONAI's classifiers' heads."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _loaded_model(run_id: str, version: str, dataset_id: str, home: Path) -> Any:
    from training.preprocess import PreprocessingSpec
    from training.registry import LoadedModel

    return LoadedModel(
        module=TinyNet().eval(), name=MODEL, version=version, label_names=("no_finding", "opacity"),
        preprocessing=PreprocessingSpec(spatial_size=SPEC_SIZE), network="tiny", gradcam_layer="features",
        threshold=0.5, run_id=run_id, dataset_version=dataset_id, artifact_sha256="0" * 64, local_dir=home,
        torchscript_path=None,
    )  # fmt: skip


def test_drift_and_feedback_end_to_end(radgate_home: Path, tmp_path: Path, webhook: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import typer
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from mlflow import MlflowClient
    from prometheus_client import REGISTRY
    from typer.testing import CliRunner

    from governance.audit import AuditLog
    from governance.settings import get_settings
    from governance.testing import create_cast
    from imaging.datasets import create_dataset, get_dataset, materialize
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Ingestor
    from serving.monitoring import (
        LiveRecorder,
        export_feedback_labels,
        feedback_dataset,
        feedback_router,
        run_drift_check,
        verify_signature,
    )
    from serving.monitoring.cli import register
    from serving.monitoring.config import MonitoringConfig
    from serving.monitoring.served import observe_dicom, shift_dicom
    from training.reference_profile import compute_reference_profile, log_reference_profile

    settings = get_settings()
    # 1. training data: de-identified through the standard pipeline, a dataset version
    train = write_demo_studies(tmp_path / "train", patients=20, images_per_patient=2, seed=1, size=48)
    ingestor = Ingestor(settings)
    for path in train.files:
        ingestor.ingest_path(path)
    dataset = create_dataset(
        "chest", train.labels_csv, split={"train": 0.8, "val": 0.1, "test": 0.1}, label_names=list(LABELS)
    ).version
    # 2. reference profile logged with the run; versions registered from it (1: unshifted, 2-3: shifted)
    uri = settings.resolved_mlflow_uri
    client = MlflowClient(uri, uri)
    run_id = client.create_run(client.create_experiment("monitoring-tests")).info.run_id
    network = TinyNet().eval()
    label_names = list(dataset.manifest.label_names)
    spec = _loaded_model(run_id, "1", dataset.id, tmp_path).preprocessing
    profile = compute_reference_profile(network, materialize(dataset, "train"), spec, label_names=label_names)
    assert profile.n_images == len(dataset.manifest.items_in("train"))
    assert (
        profile.categorical["manufacturer"] and profile.summaries["intensity_mean"]["n"] == profile.n_images
    )
    log_reference_profile(run_id, profile)
    client.create_registered_model(MODEL)
    for _ in range(3):
        mv = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id=run_id)
        client.set_model_version_tag(MODEL, mv.version, "radgate.dataset_version", dataset.id)

    # 3. live requests, recorded as serving records them
    live = write_demo_studies(tmp_path / "live", patients=16, images_per_patient=2, seed=7, size=48).files
    request_ids = []
    for version, shift in (("1", "none"), ("2", "intensity"), ("3", "manufacturer")):
        model = _loaded_model(run_id, version, dataset.id, tmp_path)
        recorder = LiveRecorder.for_run(MODEL, version, run_id)
        for i, path in enumerate(sorted(live)):
            request_id = f"req-{version}-{i:03d}"
            observe_dicom(model, recorder, request_id, shift_dicom(path.read_bytes(), shift),
                          keep_input=version == "1")  # fmt: skip
            request_ids.append(request_id)

    # 4. drift checks
    monkeypatch.setenv("RADGATE_MONITORING_WEBHOOK_SECRET", "s3cret")
    config = MonitoringConfig.model_validate(
        {"drift": {"min_samples": 20, "permutations": 1000}, "alerts": {"webhook_url": webhook}}
    )
    calm = run_drift_check(MODEL, version="1", window="1h", config=config, out_dir=tmp_path / "r1")
    assert not calm.alert and not calm.result.insufficient, calm.result.drifted_features
    assert not _Hook.received
    bright = run_drift_check(MODEL, version="2", window="1h", config=config, out_dir=tmp_path / "r2")
    assert bright.alert and {"intensity_mean", "intensity_p95"} <= set(bright.result.drifted_features)
    assert "manufacturer" not in bright.result.drifted_features
    vendor = run_drift_check(MODEL, version="3", window="1h", config=config, out_dir=tmp_path / "r3")
    assert vendor.alert and "manufacturer" in vendor.result.drifted_features
    assert not any(f.startswith("intensity") for f in vendor.result.drifted_features)
    # reports: JSON, HTML with PNG plots beside it
    report = json.loads((tmp_path / "r2" / "drift.json").read_text())
    assert report["alert"] and report["drift"]["correction"] == "bh"
    html = (tmp_path / "r2" / "drift.html").read_text()
    assert "DRIFT DETECTED" in html and 'src="intensity_mean.png"' in html
    assert (tmp_path / "r2" / "intensity_mean.png").read_bytes()[:4] == b"\x89PNG"
    # signed webhook, one per alert
    assert len(_Hook.received) == 2
    headers, body = _Hook.received[0]
    assert verify_signature(body, "s3cret", headers["X-RadGate-Timestamp"], headers["X-RadGate-Signature"])
    assert json.loads(body)["model_version"] == "2"
    # gauges and audit
    assert REGISTRY.get_sample_value("radgate_drift_alert", {"model": MODEL}) == 1.0
    assert (
        REGISTRY.get_sample_value(
            "radgate_drift_feature_drifted", {"model": MODEL, "feature": "manufacturer"}
        )
        == 1
    )
    actions = [(e.action, e.target) for e in AuditLog().entries()]
    assert ("monitoring.drift.checked", f"model:{MODEL}/1") in actions
    assert ("monitoring.drift.alert", f"model:{MODEL}/2") in actions
    assert ("monitoring.drift.alert", f"model:{MODEL}/1") not in actions

    # 5. the CLI (the module serving.monitoring.cli registers `monitor` and `feedback`)
    app = typer.Typer()
    register(app)
    monkeypatch.setenv("RADGATE_MONITORING_CONFIG", str(tmp_path / "monitoring.yaml"))
    (tmp_path / "monitoring.yaml").write_text("drift: {min_samples: 20, permutations: 500}\n")
    result = CliRunner().invoke(app, ["monitor", "drift", MODEL, "--window", "1d", "--version", "3",
                                      "--out", str(tmp_path / "cli"), "--fail-on-drift"])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "ALERT: drift in" in result.output and (tmp_path / "cli" / "drift.html").exists()
    result = CliRunner().invoke(app, ["monitor", "drift", "no-such-model", "--window", "1d"])
    assert result.exit_code == 2 and "no request" in result.output and "Traceback" not in result.output

    # 6. feedback through the HTTP route with real tokens
    cast = create_cast()
    api = FastAPI()
    api.include_router(feedback_router())
    http = TestClient(api)

    def post(token: str | None, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http.post("/v1/feedback", json=body, headers=headers)

    corrected = {"request_id": "req-1-000", "agree": False, "corrected_label": "opacity",
                 "comment": "Mr Smith's film: opacity in the left lower lobe"}  # fmt: skip
    assert post(None, corrected).status_code == 401
    assert post(cast.tokens["eng"], corrected).status_code == 403
    assert post(cast.tokens["doc"], {**corrected, "request_id": "req-9-999"}).status_code == 404
    assert post(cast.tokens["doc"], {**corrected, "corrected_label": None}).status_code == 422
    assert post(cast.tokens["doc"], {**corrected, "corrected_label": "fracture"}).status_code == 422
    response = post(cast.tokens["doc"], corrected)
    assert response.status_code == 201, response.text
    out = response.json()
    assert out["label"] == "opacity" and out["input_status"] == "kept" and len(out["instance_sha256"]) == 64
    agreed = post(cast.tokens["doc"], {"request_id": "req-1-001", "agree": True})
    assert agreed.status_code == 201 and agreed.json()["input_status"] == "kept"
    # a request served without a kept input: feedback recorded, no case
    no_input = post(cast.tokens["doc2"], {"request_id": "req-2-000", "agree": True})
    assert no_input.status_code == 201 and no_input.json()["input_status"] == "not_available"
    feedback_entries = [e for e in AuditLog().entries() if e.action == "monitoring.feedback"]
    assert len(feedback_entries) == 3 and feedback_entries[0].actor == "doc"
    assert "Smith" not in json.dumps([e.details for e in feedback_entries])
    assert REGISTRY.get_sample_value("radgate_feedback_total", {"model": MODEL, "verdict": "disagree"}) == 1

    # 7. feedback labels -> a CSV `radgate dataset create` accepts, and the next dataset version
    labels_csv = tmp_path / "feedback.csv"
    exported = export_feedback_labels(MODEL, labels_csv)
    assert exported.rows == 2 and exported.without_input == 1
    with labels_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["sha256"] for r in rows} == {out["instance_sha256"], agreed.json()["instance_sha256"]}
    only_feedback = create_dataset(
        "chest-feedback", labels_csv, split={"train": 1.0}, label_names=list(LABELS)
    )
    assert only_feedback.matched_rows == 2
    nxt = feedback_dataset(MODEL, "chest-v2", base=dataset.id).version
    items = {i.sha256: i for i in nxt.manifest.items}
    assert len(items) == len(dataset.manifest.items) + 2
    assert nxt.manifest.label_names[items[out["instance_sha256"]].label] == "opacity"
    assert get_dataset(nxt.id).id == nxt.id
    # holding out the base's test patients keeps that split unseen for champion/challenger
    held_out = feedback_dataset(MODEL, "chest-v2-fixed-test", base=dataset.id, hold_out="test").version
    test_patients = {i.patient for i in dataset.manifest.items_in("test")}
    assert test_patients and not test_patients & {i.patient for i in held_out.manifest.items}
    assert out["instance_sha256"] in {i.sha256 for i in held_out.manifest.items}
