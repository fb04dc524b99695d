"""Helpers for serving tests and benchmarks: register a small MONAI model the way training does
(RadGate metadata, TorchScript extra file, artifact hash tag, evidence for the policy) and take
it through the real approval workflow. No mocks: real MLflow registry, real audit log.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from governance.tags import ModelStatus, Tag

if TYPE_CHECKING:
    from torch import nn

    from governance.testing import Cast

__all__ = ["approve_and_promote", "build_tiny_network", "register_model", "register_segmentation_model"]


def build_tiny_network(network: str = "tiny", seed: int = 0) -> tuple[nn.Module, str]:
    """``(module, gradcam layer)``: ``tiny`` is a 3-block DenseNet; else a training network family."""
    import torch
    from monai.networks.nets import DenseNet

    torch.manual_seed(seed)
    if network == "tiny":
        net = DenseNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=2,
            init_features=16,
            growth_rate=8,
            block_config=(2, 2, 2),
        )
        return net.eval(), "features.denseblock3"
    from training.networks import build_network, gradcam_layer

    return build_network(network, num_classes=2).eval(), gradcam_layer(network)


def _experiment(name: str) -> tuple[str, str]:
    """(tracking URI, experiment id) in this RADGATE_HOME's MLflow store, created on first use."""
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return uri, str(found.experiment_id)
    location = (settings.home / "mlartifacts").as_uri()
    return uri, str(client.create_experiment(name, artifact_location=location))


def register_model(
    name: str,
    *,
    network: str = "tiny",
    spatial_size: tuple[int, int] = (64, 64),
    seed: int = 0,
    experiment: str = "serving-tests",
) -> str:
    """Log and register one version (status pending review) with passing evidence; returns it."""
    import mlflow
    import mlflow.artifacts
    import mlflow.pytorch

    from governance.tags import artifact_sha256
    from governance.testing import GOOD_METRICS, GOOD_TAGS
    from training.preprocess import PreprocessingSpec
    from training.registration import export_torchscript
    from training.registry import TORCHSCRIPT_NAME, model_metadata

    uri, experiment_id = _experiment(experiment)
    net, layer = build_tiny_network(network, seed)
    spec = PreprocessingSpec(spatial_size=spatial_size)
    metadata = model_metadata(
        label_names=["no_finding", "opacity"],
        preprocessing=spec,
        network="densenet121" if network == "tiny" else network,
        gradcam_layer=layer,
        threshold=0.5,
        dataset_version="serving-test",
    )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        ts = export_torchscript(net, spec, Path(tmp) / TORCHSCRIPT_NAME)
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            metadata=metadata,
            extra_files=[str(ts)],
            pip_requirements=[],
            serialization_format="pickle",
        )
        for metric, value in GOOD_METRICS.items():
            mlflow.log_metric(metric, value)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, tracking_uri=uri))
    digest = artifact_sha256(local)
    tags = {
        Tag.STATUS.value: ModelStatus.PENDING_REVIEW.value,
        Tag.ARTIFACT_SHA256.value: digest,
        **GOOD_TAGS,
    }
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    del run
    return str(version.version)


def approve_and_promote(name: str, version: str, cast: Cast, alias: str = "production") -> None:
    """Submit (eng), approve (doc, eng2), promote (eng): the policy's two-person rule."""
    from governance.approvals import Workflow

    workflow = Workflow()
    workflow.submit(cast["eng"], name, version)
    workflow.approve(cast["doc"], name, version)
    workflow.approve(cast["eng2"], name, version)
    workflow.promote(cast["eng"], name, version, alias)


def register_segmentation_model(
    name: str,
    *,
    labels: dict[int, str] | None = None,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    roi_size: tuple[int, int, int] = (16, 32, 32),
    seed: int = 0,
    experiment: str = "serving-tests",
) -> str:
    """Register an untrained 3D UNet through training's own registration
    (:func:`training.registration.log_and_register`: ``segmentation.json``, ``radgate.task``,
    artifact hash) with passing segmentation evidence (test Dice per structure, subgroup gap,
    de-identified dataset), pending review; returns the version."""
    import mlflow
    import torch

    from governance.testing import GOOD_TAGS
    from training.registration import log_and_register
    from training.segmentation.evaluation import SegmentationReport
    from training.segmentation.networks import build_segmentation_network
    from training.segmentation.spec import SegmentationSpec

    uri, experiment_id = _experiment(experiment)
    spec = SegmentationSpec(labels=labels or {1: "blob"}, spacing=spacing, roi_size=roi_size)
    torch.manual_seed(seed)
    net = build_segmentation_network(spec.network, num_classes=spec.num_classes, channels=(4, 8)).eval()
    scores = {"dice": 0.85, "hd95": 3.0, "n": 4.0}
    report = SegmentationReport(
        structures=spec.structures,
        overall={**{s: dict(scores) for s in spec.structures}, "mean": dict(scores)},
        gaps={"site": 0.03},
    )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics(report.flat_metrics())
        mlflow.set_tags(GOOD_TAGS)
        registration = log_and_register(
            net,
            network=spec.network,
            spec=spec,
            label_names=["background", *spec.structures],
            dataset_version="serving-test",
            report=report,
            run_id=run.info.run_id,
            tracking_uri=uri,
            model_card=f"# {name}\n\nUntrained 3D UNet registered by serving tests.\n",
            model_name=name,
            torchscript=False,
        )
    assert registration.version is not None
    return registration.version
