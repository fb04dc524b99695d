"""The feedback -> retraining round trip as a new user runs it, on real parts: a trained tiny model
(MLflow SQLite, reference profile) approved and promoted through the workflow, served by the HTTP
API (the model worker in-process, no Ray), clinician feedback through ``POST /v1/feedback`` (the
sealed input de-identified by the standard pipeline), then ``radgate retrain NAME``: a new dataset
version, a new pending model version trained with the champion's config, and the
champion/challenger comparison on the fixed test split in MLflow and the audit log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MODEL = "rt-chest"
LABELS = ["no_finding", "opacity"]
_LENIENT_POLICY = """
version: 1
default:
  approvals:
    - {role: clinical-reviewer, count: 1}
    - {role: ml-engineer, count: 1}
  distinct_approvers: true
  submitter_may_approve: false
  approval_valid_days: 365
  allowed_aliases: [staging, production]
  checks: []
"""


def _wait_recorded(request_ids: list[str], deadline_s: float = 120) -> None:
    """Serving records live features off the request path: wait until they are in the store."""
    from sqlalchemy import select

    from governance.catalog import open_catalog
    from serving.monitoring.models import LiveRecord

    end = time.monotonic() + deadline_s
    while True:
        with open_catalog().session() as session:
            found = set(
                session.execute(
                    select(LiveRecord.request_id).where(LiveRecord.request_id.in_(request_ids))
                ).scalars()
            )
        if found == set(request_ids) or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert found == set(request_ids), f"{len(found)}/{len(request_ids)} requests recorded"


def test_feedback_retrains_into_a_pending_version(
    tmp_path: Path, radgate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from governance.audit import AuditLog
    from governance.settings import get_settings
    from governance.testing import create_cast
    from imaging.datasets import create_dataset, get_dataset
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Ingestor
    from radgate.cli import app
    from serving.api import IngressService, api, install_service
    from serving.config import ServeConfig
    from serving.monitoring.retrain import COMPARISON_ARTIFACT
    from serving.testing import approve_and_promote
    from serving.worker import ModelWorker
    from tests.unit.test_serving_api import LocalClient
    from training.config import validate_config
    from training.run import train

    # 1. a de-identified dataset version and a tiny model trained on it (version 1, pending)
    studies = write_demo_studies(tmp_path / "in", patients=12, images_per_patient=2, seed=5, size=32)
    ingestor = Ingestor()
    for path in studies.files:
        ingestor.ingest_path(path)
    base = create_dataset("rt", studies.labels_csv, label_names=LABELS).version
    config = validate_config(
        {
            "name": "rt",
            "data": {"dataset": "rt", "spatial_size": [16, 16], "batch_size": 8},
            "model": {"network": "resnet18"},
            "optim": {"max_epochs": 1},
            "run": {"experiment": "retrain-it"},
            "evaluation": {"min_subgroup_size": 1},
            "registry": {"model_name": MODEL},
        }
    )
    champion = train(config)
    assert champion.model_version == "1"

    # 2. two-person approval under a policy without metric thresholds (a 1-epoch model), promoted
    (radgate_home / "policy.yaml").write_text(_LENIENT_POLICY)
    cast = create_cast()
    approve_and_promote(MODEL, "1", cast)

    # 3. served: predictions on new patients' images through the HTTP API
    served = ServeConfig.model_validate({"models": [{"name": MODEL}]})
    worker = ModelWorker(served.models[0])
    assert worker.recorder is not None, "the trained version has a reference profile"
    install_service(IngressService(served, {MODEL: LocalClient(worker)}))
    http = TestClient(api)
    live = write_demo_studies(tmp_path / "live", patients=3, images_per_patient=1, seed=41, size=32).files
    request_ids = []
    for path in live:
        reply = http.post(
            f"/v1/models/{MODEL}/predict",
            content=path.read_bytes(),
            headers={"Authorization": f"Bearer {cast.tokens['pacs']}", "Content-Type": "application/dicom"},
        )
        assert reply.status_code == 200, reply.text
        request_ids.append(reply.json()["results"][0]["request_id"])
    _wait_recorded(request_ids)

    # 4. feedback: two corrections and one agreement; each input kept, de-identified
    doc = {"Authorization": f"Bearer {cast.tokens['doc']}"}
    verdicts = [
        {"request_id": request_ids[0], "agree": False, "corrected_label": "opacity", "comment": "RLL"},
        {"request_id": request_ids[1], "agree": False, "corrected_label": "no_finding"},
        {"request_id": request_ids[2], "agree": True},
    ]
    kept: dict[str, str] = {}
    for body in verdicts:
        reply = http.post("/v1/feedback", json=body, headers=doc)
        assert reply.status_code == 201, reply.text
        out = reply.json()
        assert out["input_status"] == "kept", out
        kept[out["instance_sha256"]] = out["label"]
    assert len(kept) == 3

    # 5. `radgate retrain NAME` (ml-engineer): refused for a reviewer, done for an engineer
    runner = CliRunner()
    refused = runner.invoke(app, ["retrain", MODEL], env={"RADGATE_TOKEN": cast.tokens["doc"]})
    assert refused.exit_code == 4 and "needs role" in refused.output and "Traceback" not in refused.output
    result = runner.invoke(app, ["retrain", MODEL], env={"RADGATE_TOKEN": cast.tokens["eng"]})
    assert result.exit_code == 0, result.output
    assert f"registered {MODEL} version 2 (pending review)" in result.output

    # the new dataset version: the base (its test patients held out) plus the feedback cases
    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    challenger = client.get_model_version(MODEL, "2")
    assert challenger.tags["radgate.status"] == "pending_review"
    new = get_dataset(challenger.tags["radgate.dataset_version"])
    assert new.id != base.id
    items = {i.sha256: i for i in new.manifest.items}
    for sha256, label in kept.items():
        assert new.manifest.label_names[items[sha256].label] == label
    held = {i.patient for i in base.manifest.items_in("test")}
    assert held and not held & {i.patient for i in new.manifest.items}
    assert set(items) - set(kept) == {i.sha256 for i in base.manifest.items if i.patient not in held}

    # trained with the champion's config; comparison on the fixed test split logged to MLflow
    assert challenger.run_id is not None
    run = client.get_run(challenger.run_id)
    champion_run = client.get_run(champion.run_id)
    for param in ("model.network", "data.spatial_size", "optim.max_epochs"):
        assert run.data.params[param] == champion_run.data.params[param], param
    assert run.data.tags["radgate.retrain.champion_version"] == "1"
    artifact = client.download_artifacts(run.info.run_id, COMPARISON_ARTIFACT, str(tmp_path))
    comparison = json.loads(Path(artifact).read_text())
    assert comparison["test_split"] == {
        "dataset_version": base.id,
        "instances": len(base.manifest.items_in("test")),
        "excluded_seen_by_challenger": 0,
    }
    assert comparison["champion"]["version"] == "1" and comparison["challenger"]["version"] == "2"
    assert set(comparison["champion"]["metrics"]) >= {"auroc", "sensitivity", "specificity"}
    assert set(comparison["challenger"]["metrics"]) == set(comparison["champion"]["metrics"])
    for who in ("champion", "challenger"):
        for metric, value in comparison[who]["metrics"].items():
            if value is not None and metric in ("auroc", "sensitivity", "specificity"):
                assert run.data.metrics[f"{who}_fixed_test_{metric}"] == pytest.approx(value)

    # the audit trail holds the whole loop, and the chain verifies
    log = AuditLog()
    actions = [(e.action, e.actor) for e in log.entries()]
    assert actions.count(("monitoring.feedback", "doc")) == 3
    assert ("monitoring.retrain", "eng") in actions
    assert log.verify().ok
    assert "RLL" not in json.dumps([e.details for e in log.entries()])
