"""Labels file -> dataset version -> trained, evaluated, registered model, in one call.

This is what ``radgate demo`` runs after ingestion::

    from training.pipeline import train_from_labels
    result = train_from_labels(demo.labels_csv, dataset_name="demo", workers=1)
    result.dataset.version.id, result.training.model_name, result.training.model_version
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance.settings import Settings, get_settings
from imaging.datasets import CreateReport, create_dataset
from training.config import TrainConfig, apply_overrides, load_config, validate_config
from training.run import TrainOutcome, train

__all__ = ["DEMO_CONFIG", "PipelineOutcome", "demo_config_path", "train_from_labels"]

#: Used when configs/train/demo.yaml is not available (installed package without the repo).
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo-opacity",
    "data": {"dataset": "demo", "spatial_size": [64, 64], "batch_size": 8},
    "model": {"network": "resnet18"},
    "optim": {"lr": 0.001, "max_epochs": 12},
    "run": {"workers": 1, "experiment": "radgate-demo"},
    "evaluation": {"min_subgroup_size": 3},
    "registry": {"model_name": "chest-opacity"},
}


@dataclass
class PipelineOutcome:
    dataset: CreateReport
    training: TrainOutcome


def demo_config_path() -> Path:
    return Path(__file__).resolve().parents[1] / "configs" / "train" / "demo.yaml"


def train_from_labels(
    labels_csv: Path,
    *,
    dataset_name: str = "demo",
    config: TrainConfig | Path | None = None,
    overrides: Sequence[str] = (),
    label_names: Sequence[str] | None = ("no_finding", "opacity"),
    workers: int | None = None,
    register: bool = True,
    settings: Settings | None = None,
) -> PipelineOutcome:
    """Create (or reuse) the dataset version for ``labels_csv``, then train on exactly that version."""
    settings = settings or get_settings()
    report = create_dataset(
        dataset_name, labels_csv, label_names=list(label_names) if label_names else None, settings=settings
    )
    extra = [*overrides, f"data.dataset={report.version.id}"]
    if workers is not None:
        extra.append(f"run.workers={workers}")
    if isinstance(config, TrainConfig):
        cfg = validate_config(apply_overrides(config.model_dump(mode="json"), extra))
    elif config is not None:
        cfg = load_config(config, extra)
    elif demo_config_path().exists():
        cfg = load_config(demo_config_path(), extra)
    else:
        import copy

        cfg = validate_config(apply_overrides(copy.deepcopy(DEMO_CONFIG), extra))
    return PipelineOutcome(dataset=report, training=train(cfg, settings=settings, register=register))
