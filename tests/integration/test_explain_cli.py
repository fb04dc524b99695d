"""``radgate explain`` / ``radgate explain-sanity`` end to end: a MONAI model registered in an
embedded MLflow (SQLite under RADGATE_HOME), a demo radiograph in, PNG + DICOM SC + JSON out."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

MODEL = "chest-opacity"


def _app() -> typer.Typer:
    from training.explain.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


@pytest.fixture
def registered(tmp_path: Path) -> str:
    """Register a small MONAI DenseNet the way training does (metadata + artifact hash tag)."""
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient
    from monai.networks.nets import DenseNet

    from governance.settings import get_settings
    from governance.tags import artifact_sha256
    from training.preprocess import PreprocessingSpec
    from training.registry import model_metadata

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("explain-cli", artifact_location=str(tmp_path / "artifacts"))
    torch.manual_seed(0)
    net = DenseNet(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=16, growth_rate=8, block_config=(2, 2, 2)
    ).eval()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    metadata = model_metadata(
        label_names=["no_finding", "opacity"],
        preprocessing=PreprocessingSpec(spatial_size=(64, 64)),
        network="densenet121",
        gradcam_layer="features.denseblock3",
        threshold=0.5,
        dataset_version="test",
    )
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name=MODEL,
            metadata=metadata,
            pip_requirements=[],
            serialization_format="pickle",
        )
    version = client.search_model_versions(f"name='{MODEL}'")[0].version
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/{version}", tracking_uri=uri)
    client.set_model_version_tag(MODEL, version, "radgate.artifact_sha256", artifact_sha256(Path(local)))
    client.set_model_version_tag(MODEL, version, "radgate.status", "pending_review")
    return f"{MODEL}/{version}"


@pytest.fixture
def radiographs(tmp_path: Path) -> list[Path]:
    from imaging.demo_data import write_demo_studies

    return write_demo_studies(tmp_path / "demo", patients=2, images_per_patient=1, size=64, seed=3).files


def test_explain_cli_writes_png_dicom_and_summary(
    registered: str, radiographs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _app(),
        ["explain", "--model", registered, str(radiographs[0]), "--method", "gradcam", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "Finding: opacity" in result.output
    record = json.loads((out / "gradcam-result.json").read_text())
    assert record["model"] == {"name": MODEL, "version": "1", "approval": "pending_review"}
    assert record["target_layer"] == "features.denseblock3"
    assert record["summary"].startswith("Finding: opacity")
    assert (out / "gradcam-overlay.png").read_bytes()[:4] == b"\x89PNG"
    dicom = out / "gradcam-overlay.dcm"
    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(dicom)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Error" not in done.stdout + done.stderr

    report = out / "gradcam-result-sr.dcm"
    assert report.exists() and "sr: " in result.output
    if shutil.which("dciodvfy"):
        done = subprocess.run(["dciodvfy", str(report)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "Error" not in done.stdout + done.stderr

    occlusion = CliRunner().invoke(
        _app(), ["explain", "-m", registered, str(radiographs[1]), "--method", "occlusion", "-o", str(out)]
    )
    assert occlusion.exit_code == 0, occlusion.output
    assert (out / "occlusion-overlay.dcm").exists()


def test_explain_cli_errors_are_clean(registered: str, radiographs: list[Path], tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(_app(), ["explain", "-m", "nope/9", str(radiographs[0]), "-o", str(tmp_path)])
    assert unknown.exit_code == 2 and "no registered model version" in unknown.output
    assert "Traceback" not in unknown.output
    bad_method = runner.invoke(
        _app(), ["explain", "-m", registered, str(radiographs[0]), "--method", "lime", "-o", str(tmp_path)]
    )
    assert bad_method.exit_code == 2 and "lime" in bad_method.output
    bad_target = runner.invoke(
        _app(),
        ["explain", "-m", registered, str(radiographs[0]), "--target", "fracture", "-o", str(tmp_path)],
    )
    assert bad_target.exit_code == 2 and "unknown label" in bad_target.output
    not_dicom = tmp_path / "x.dcm"
    not_dicom.write_bytes(b"not dicom at all")
    garbage = runner.invoke(_app(), ["explain", "-m", registered, str(not_dicom), "-o", str(tmp_path)])
    assert garbage.exit_code == 2 and "Traceback" not in garbage.output


def test_explain_sanity_cli_records_the_check_on_the_version(
    registered: str, radiographs: list[Path]
) -> None:
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings

    result = CliRunner().invoke(
        _app(), ["explain-sanity", "-m", registered, *map(str, radiographs), "--no-cascade"]
    )
    # An untrained network: the maps carry nothing the model relies on, so the check fails.
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and "not faithful" in result.output
    uri = get_settings().resolved_mlflow_uri
    tags = MlflowClient(uri, registry_uri=uri).get_model_version(MODEL, "1").tags
    assert tags["radgate.saliency_sanity"] == "failed"
    assert "radgate.saliency_randomization_spearman" in tags
