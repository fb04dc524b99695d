"""Log the trained model to MLflow (pytorch flavour + TorchScript + card) and register a pending version."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from governance.tags import ModelStatus, Tag, artifact_sha256
from training.evaluation import EvaluationReport
from training.networks import gradcam_layer
from training.preprocess import PreprocessingSpec
from training.registry import TORCHSCRIPT_NAME, download_model_dir, model_metadata
from training.segmentation.spec import SEGMENTATION_ARTIFACT, SEGMENTATION_TASK, SegmentationSpec

__all__ = ["Registration", "example_input", "export_torchscript", "log_and_register"]


@dataclass(frozen=True)
class Registration:
    name: str | None
    version: str | None
    model_uri: str
    artifact_sha256: str


def example_input(spec: PreprocessingSpec | SegmentationSpec) -> torch.Tensor:
    """A random input of the network's shape: ``[1, C, H, W]``, or ``[1, 1, Z, Y, X]`` (one patch)."""
    if isinstance(spec, SegmentationSpec):
        return torch.rand(1, 1, *spec.roi_size)
    return torch.rand(1, spec.channels, *spec.spatial_size)


def export_torchscript(
    module: torch.nn.Module, spec: PreprocessingSpec | SegmentationSpec, path: Path
) -> Path:
    """Traced TorchScript of the network for Triton (input ``[N, C, H, W]`` or ``[N, 1, Z, Y, X]``)."""
    example = torch.zeros_like(example_input(spec))
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
    traced.save(str(path))
    return path


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "monai", "numpy")]


def _temperature(report: EvaluationReport | Any) -> float:
    calibration = getattr(report, "calibration", None)
    return float(calibration.temperature) if calibration is not None else 1.0


def log_and_register(
    module: torch.nn.Module,
    *,
    network: str,
    spec: PreprocessingSpec | SegmentationSpec,
    label_names: list[str],
    dataset_version: str,
    report: EvaluationReport | Any,
    run_id: str,
    tracking_uri: str,
    model_card: str,
    model_name: str | None,
    torchscript: bool = True,
) -> Registration:
    """Log the model in the active run; register a new version tagged ``pending_review`` when named.

    The version's ``radgate.artifact_sha256`` is the tree hash of the model directory as
    downloaded from the store, i.e. exactly what serving will verify. A segmentation model
    (``spec`` a :class:`SegmentationSpec`, ``report`` a ``SegmentationReport``) carries
    ``segmentation.json`` and the tags ``radgate.task=segmentation`` and ``radgate.segmentation``.
    """
    segmentation = isinstance(spec, SegmentationSpec)
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    module = module.eval().cpu()
    example = example_input(spec)
    with torch.no_grad():
        output = module(example)
    signature = infer_signature(example.numpy(), output.numpy())
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        card_path = Path(tmp) / "model_card.md"
        card_path.write_text(model_card)
        extra.append(str(card_path))
        prep_path = Path(tmp) / (SEGMENTATION_ARTIFACT if segmentation else "preprocessing.json")
        prep_path.write_text(spec.to_json())
        extra.append(str(prep_path))
        if torchscript:
            extra.append(str(export_torchscript(module, spec, Path(tmp) / TORCHSCRIPT_NAME)))
        info = mlflow.pytorch.log_model(
            module,
            name="model",
            signature=signature,
            input_example=example.numpy(),
            extra_files=extra,
            pip_requirements=_requirements(),
            # Pickle keeps the MONAI module (named layers for Grad-CAM); pt2 would give a graph.
            serialization_format="pickle",
            metadata=model_metadata(
                label_names=label_names,
                preprocessing=spec,
                network=network,
                gradcam_layer="" if segmentation else gradcam_layer(network),
                threshold=None if segmentation else report.threshold,
                dataset_version=dataset_version,
                temperature=_temperature(report),
            ),
        )
    from mlflow.tracking import MlflowClient

    local = download_model_dir(MlflowClient(tracking_uri), info.model_uri, info.model_id)
    digest = artifact_sha256(local)
    mlflow.set_tag(Tag.ARTIFACT_SHA256, digest)
    if not model_name:
        return Registration(None, None, info.model_uri, digest)
    tags: dict[str, Any] = {
        Tag.STATUS: ModelStatus.PENDING_REVIEW,
        Tag.ARTIFACT_SHA256: digest,
        Tag.DATASET_VERSION: dataset_version,
        Tag.NETWORK: network,
        Tag.LABEL_NAMES: json.dumps(label_names),
        Tag.RUN_ID: run_id,
    }
    if segmentation:
        tags[Tag.TASK] = SEGMENTATION_TASK
        tags[Tag.SEGMENTATION] = spec.to_json()
    else:
        tags[Tag.TASK] = "classification"
        tags[Tag.PREPROCESSING] = spec.to_json()
        tags[Tag.THRESHOLD] = f"{report.threshold:.6f}"
    for key, value in report.summary().items():
        tags[f"{Tag.METRICS_PREFIX}{key}"] = "nan" if math.isnan(value) else f"{value:.4f}"
    version = mlflow.register_model(
        info.model_uri, model_name, tags={str(k): str(v) for k, v in tags.items()}
    )
    return Registration(model_name, str(version.version), f"models:/{model_name}/{version.version}", digest)
