"""The MLflow record of a training run, shared by every task (classification in
:mod:`training.run`, segmentation in :mod:`training.segmentation.run`): the run opened with its
params, tags and dataset input, the fit's timing metrics, and what the run produced.

Kept apart from :mod:`training.run` so that the segmentation path uses it without importing the
classification path that dispatches to it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from governance.settings import Settings
from governance.tags import Tag
from imaging.datasets import DatasetVersion
from training.config import TrainConfig
from training.evaluation import EvaluationReport
from training.launch import FitResult

__all__ = [
    "RunContext",
    "TrainOutcome",
    "ensure_experiment",
    "git_commit",
    "log_fit_metrics",
    "open_run",
    "package_versions",
]

_PACKAGES = ("torch", "monai", "pytorch-lightning", "ray", "mlflow", "pydicom", "numpy", "radgate")


@dataclass
class TrainOutcome:
    """What a run produced (all of it is also in MLflow under ``run_id``)."""

    run_id: str
    experiment_id: str
    dataset_version: str
    model_name: str | None
    model_version: str | None
    model_uri: str
    artifact_sha256: str
    #: A :class:`training.segmentation.evaluation.SegmentationReport` for segmentation runs.
    evaluation: EvaluationReport | Any
    fit: FitResult

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.flat_metrics()

    @classmethod
    def of(
        cls, ctx: RunContext, dataset: DatasetVersion, registration: Any, report: Any, result: FitResult
    ) -> TrainOutcome:
        return cls(
            run_id=ctx.run_id,
            experiment_id=ctx.experiment_id,
            dataset_version=dataset.id,
            model_name=registration.name,
            model_version=registration.version,
            model_uri=registration.model_uri,
            artifact_sha256=registration.artifact_sha256,
            evaluation=report,
            fit=result,
        )


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def ensure_experiment(tracking_uri: str, name: str, settings: Settings) -> str:
    """Create the store (driver only) and the experiment, with artifacts under RADGATE_HOME."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.search_experiments(max_results=1)  # creates/migrates the SQLite store here, once
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:"):  # embedded: keep artifacts next to the store, not in ./mlruns
        location = (settings.home / "mlflow-artifacts" / name).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


def _log_dataset_input(dataset: DatasetVersion) -> None:
    import mlflow
    import pandas as pd
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.pandas_dataset import from_pandas

    series = dataset.manifest.series
    if series is not None:  # segmentation: one row per series, its label volume by hash
        records = [
            {"series_uid": s.series_uid, "patient": s.patient, "label_sha256": s.label_sha256,
             "split": str(s.split), "slices": len(s.instances), **s.attributes}
            for s in series
        ]  # fmt: skip
    else:
        records = [
            {
                "sha256": i.sha256,
                "patient": i.patient,
                "label": i.label,
                "split": str(i.split),
                **i.attributes,
            }
            for i in dataset.manifest.items
        ]
    frame = pd.DataFrame(records)
    # A RadGate dataset version is addressed by its manifest hash, not by a file or URL.
    source = CodeDatasetSource(
        {
            Tag.DATASET_VERSION: dataset.id,
            Tag.DATASET_NAME: dataset.name,
            "uri": f"radgate://datasets/{dataset.id}",
        }
    )
    targets = "label" if series is None else None
    data = from_pandas(frame, source=source, targets=targets, name=dataset.name, digest=dataset.id[:16])
    mlflow.log_input(data, context="training", tags={Tag.DATASET_VERSION: dataset.id})
    mlflow.log_dict(json.loads(dataset.manifest.canonical_json()), "dataset/manifest.json")


@dataclass
class RunContext:
    """Where a run logs and trains: opened by :func:`open_run`, shared by every task."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    ray_address: str | None
    cpus_per_worker: int
    resume: bool
    settings: Settings

    def job_kwargs(self, config: TrainConfig) -> dict[str, Any]:
        """The :class:`~training.launch.FitJob` fields every task fills the same way."""
        return {
            "lr": config.optim.lr,
            "weight_decay": config.optim.weight_decay,
            "dropout": config.model.dropout,
            "max_epochs": config.optim.max_epochs,
            "batch_size": config.data.batch_size,
            "cache_rate": config.data.cache_rate,
            "seed": config.run.seed,
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "checkpoint_dir": self.settings.home / "checkpoints" / self.run_id,
            "workers": config.run.workers,
            "cpus_per_worker": self.cpus_per_worker,
            "gpus_per_worker": config.run.gpus_per_worker,
            "ray_address": self.ray_address,
            "resume": self.resume,
        }


@contextmanager
def open_run(config: TrainConfig, dataset: DatasetVersion, settings: Settings) -> Iterator[RunContext]:
    """Open (or resume) the MLflow run of ``config`` on ``dataset``: params, tags, dataset input."""
    import mlflow

    tracking_uri = settings.resolved_mlflow_uri
    experiment_id = ensure_experiment(tracking_uri, config.run.experiment, settings)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    resume = config.run.resume_from
    # RAY_ADDRESS (settings) selects an existing cluster when the config names none; a worker on
    # a cluster asks for cpus_per_worker, not this machine's core count.
    ray_address = config.run.ray_address or settings.ray_address
    on_ray = config.run.workers > 1 or ray_address is not None
    cpus = config.run.cpus_per_worker if on_ray else max(os.cpu_count() or 1, 1)
    with mlflow.start_run(
        run_id=resume,
        experiment_id=None if resume else experiment_id,
        run_name=None if resume else (config.run.run_name or config.name),
        log_system_metrics=True,
    ) as active:
        run_id = active.info.run_id
        if not resume:
            mlflow.log_params(_flatten("", config.model_dump(mode="json"), {}))
            mlflow.log_dict(config.model_dump(mode="json"), "config.json")
            versions = {f"{Tag.VERSION_PREFIX}{k}": v for k, v in package_versions().items()}
            mlflow.set_tags({Tag.GIT_COMMIT: git_commit(), Tag.DATASET_VERSION: dataset.id,
                             Tag.TASK: str(config.task), **versions})  # fmt: skip
            _log_dataset_input(dataset)
        yield RunContext(run_id, experiment_id, tracking_uri, ray_address, cpus, resume is not None, settings)


def log_fit_metrics(result: FitResult) -> None:
    import mlflow

    mlflow.log_metrics(
        {"startup_seconds": result.startup_seconds, "fit_wall_seconds": result.wall_seconds,
         "steady_images_per_s": result.steady_images_per_s}
    )  # fmt: skip
