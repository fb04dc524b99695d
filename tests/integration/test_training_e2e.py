"""Training end to end with real MLflow (SQLite) and real Ray Train: tiny images, 1-2 epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imaging.datasets import create_dataset
from imaging.demo_data import write_demo_studies
from training.config import TrainConfig, validate_config

pytestmark = pytest.mark.integration


def _prepare(tmp_path: Path, **overrides: Any) -> TrainConfig:
    from imaging.ingest import Ingestor

    demo = write_demo_studies(tmp_path / "in", patients=12, images_per_patient=2, seed=5, size=32)
    ingestor = Ingestor()
    for path in demo.files:
        ingestor.ingest_path(path)
    create_dataset("tiny", demo.labels_csv, label_names=["no_finding", "opacity"])
    data: dict[str, Any] = {
        "name": "tiny",
        "data": {"dataset": "tiny", "spatial_size": [16, 16], "batch_size": 8},
        "model": {"network": "resnet18"},
        "optim": {"max_epochs": 2},
        "run": {"experiment": "it"},
        "evaluation": {"min_subgroup_size": 1},
        "registry": {"model_name": "tiny-model"},
    }
    for key, value in overrides.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return validate_config(data)


def _check_mlflow(outcome: Any, epochs: int) -> None:
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings
    from governance.tags import Tag as ModelTag
    from training.registry import load_model

    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.network"] == "resnet18"
    assert run.data.tags["radgate.dataset_version"] == outcome.dataset_version
    assert {"test_auroc", "test_sensitivity", "test_specificity", "test_ece", "val_loss"} <= set(
        run.data.metrics
    )
    assert len(client.get_metric_history(outcome.run_id, "train_loss")) == epochs
    assert run.inputs is not None
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == outcome.dataset_version[:16]
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"model_card.md", "evaluation", "dataset", "config.json"} <= artifacts
    evaluation = {a.path for a in client.list_artifacts(outcome.run_id, "evaluation")}
    assert {"evaluation/reliability.png", "evaluation/confusion_matrix.png"} <= evaluation
    version = client.get_model_version("tiny-model", outcome.model_version)
    assert version.tags[ModelTag.STATUS] == "pending_review"
    assert version.tags[ModelTag.ARTIFACT_SHA256] == outcome.artifact_sha256
    assert version.tags[ModelTag.DATASET_VERSION] == outcome.dataset_version
    assert "radgate.metrics.auroc" in version.tags
    # post-training evidence the approval policy reads (training/evidence.py)
    assert version.tags["radgate.dataset.deidentified"] == "true"
    evidence = client.get_run(outcome.run_id).data.tags["radgate.evidence"]
    assert "dataset_deidentified=ok" in evidence and "reference_profile=ok" in evidence, evidence
    assert "explanations=ok" in evidence and "dataset_report=ok" in evidence, evidence
    assert "radgate.saliency_sanity" in client.get_model_version("tiny-model", outcome.model_version).tags
    client.set_registered_model_alias("tiny-model", "candidate", outcome.model_version)
    loaded = load_model("tiny-model@candidate")
    assert loaded.version == outcome.model_version and loaded.artifact_sha256 == outcome.artifact_sha256
    assert loaded.label_names == ("no_finding", "opacity") and loaded.network == "resnet18"
    assert loaded.preprocessing.spatial_size == (16, 16)
    assert loaded.torchscript_path is not None and loaded.torchscript_path.exists()
    import torch

    x = torch.rand(2, 1, 16, 16)
    scripted = torch.jit.load(str(loaded.torchscript_path))
    assert torch.allclose(scripted(x), loaded.module(x), atol=1e-5)


def test_local_lightning_run_is_tracked_registered_and_resumable(tmp_path: Path, radgate_home: Path) -> None:
    from training.run import train

    config = _prepare(tmp_path, optim__max_epochs=1)
    first = train(config)
    _check_mlflow(first, epochs=1)
    checkpoints = list((radgate_home / "checkpoints" / first.run_id).glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["last.ckpt"]
    # Resume the same MLflow run from its checkpoint for one more epoch.
    resumed_config = validate_config(
        {
            **config.model_dump(mode="json"),
            "optim": {"max_epochs": 2},
            "run": {"experiment": "it", "resume_from": first.run_id},
        }
    )
    resumed = train(resumed_config)
    assert resumed.run_id == first.run_id
    assert len(resumed.fit.epoch_seconds) == 1  # only epoch 2 ran
    _check_mlflow(resumed, epochs=2)
    assert resumed.model_version == "2"
    # A changed artifact no longer matches the hash recorded at registration.
    from training.registry import ArtifactIntegrityError, load_model

    cards = sorted((radgate_home / "mlflow-artifacts").glob("**/artifacts/extra_files/model_card.md"))
    assert len(cards) == 2
    for card in cards:
        card.write_text(card.read_text() + "tampered\n")
    with pytest.raises(ArtifactIntegrityError):
        load_model("tiny-model/2")


def test_ray_train_two_cpu_workers(tmp_path: Path, radgate_home: Path) -> None:
    from training.run import train

    config = _prepare(tmp_path, run__workers=2)
    outcome = train(config)
    assert outcome.fit.workers == 2 and len(outcome.fit.epoch_seconds) == 2
    _check_mlflow(outcome, epochs=2)
    # CheckpointConfig(num_to_keep=1): one Ray checkpoint left on disk.
    kept = list((radgate_home / "checkpoints" / outcome.run_id).glob("**/checkpoint_*/checkpoint.ckpt"))
    assert len(kept) == 1
