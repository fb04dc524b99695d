"""One training run end to end: dataset version -> fit -> evaluate -> log -> register.

``train(config)`` is what ``radgate train`` and ``radgate demo`` call. The MLflow store is
created here, in the driver, before any Ray worker starts (two processes migrating a fresh
SQLite store at once crash), and workers log to the run this function opened.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from governance.settings import Settings, get_settings
from governance.tags import Tag
from imaging.datasets import DatasetVersion, get_dataset, materialize
from training.config import ConfigError, TrainConfig, TrainTask
from training.evaluation import EvaluationReport, apply_temperature, evaluate_logits, save_plots
from training.evidence import record_post_training_evidence, refuse_superseded
from training.launch import FitJob, FitResult, fit
from training.networks import gradcam_layer
from training.preprocess import IMAGE_KEY, PreprocessingSpec

__all__ = [
    "RunContext",
    "TrainOutcome",
    "ensure_experiment",
    "log_fit_metrics",
    "open_run",
    "predict_logits",
    "predict_scores",
    "train",
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


def _versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _git_commit() -> str:
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


@torch.no_grad()
def predict_logits(
    module: torch.nn.Module, rows: list[dict[str, Any]], spec: PreprocessingSpec, batch_size: int = 32
) -> np.ndarray:
    """``[N, C]`` logits for materialised rows, with the eval transform."""
    from monai.data import Dataset
    from torch.utils.data import DataLoader

    module.eval()
    data = Dataset([{IMAGE_KEY: r[IMAGE_KEY]} for r in rows], spec.eval_transform())
    logits = [module(batch[IMAGE_KEY]) for batch in DataLoader(data, batch_size=batch_size, num_workers=0)]
    return torch.cat(logits).numpy().astype(np.float64) if logits else np.zeros((0, 2))


def predict_scores(
    module: torch.nn.Module, rows: list[dict[str, Any]], spec: PreprocessingSpec, batch_size: int = 32
) -> np.ndarray:
    """Positive-class probabilities (uncalibrated softmax) for materialised rows."""
    from training.evaluation import apply_temperature

    logits = predict_logits(module, rows, spec, batch_size)
    return apply_temperature(logits)[:, 1] if len(logits) else np.zeros(0)


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
            mlflow.set_tags({Tag.GIT_COMMIT: _git_commit(), Tag.DATASET_VERSION: dataset.id,
                             Tag.TASK: str(config.task),
                             **{f"{Tag.VERSION_PREFIX}{k}": v for k, v in _versions().items()}})  # fmt: skip
            _log_dataset_input(dataset)
        yield RunContext(run_id, experiment_id, tracking_uri, ray_address, cpus, resume is not None, settings)


def log_fit_metrics(result: FitResult) -> None:
    import mlflow

    mlflow.log_metrics(
        {"startup_seconds": result.startup_seconds, "fit_wall_seconds": result.wall_seconds,
         "steady_images_per_s": result.steady_images_per_s}
    )  # fmt: skip


def train(
    config: TrainConfig, *, settings: Settings | None = None, register: bool | None = None
) -> TrainOutcome:
    """Fit, evaluate, log and (by default) register a model as the config says.

    Raises :class:`imaging.datasets.DatasetError` for a missing dataset version and
    :class:`training.config.ConfigError` for a config the data cannot satisfy.
    ``task: segmentation`` configs run :func:`training.segmentation.run.train_segmentation`.
    """
    import mlflow

    from training.model_card import render_model_card
    from training.module import ClassifierModule
    from training.registration import log_and_register

    settings = settings or get_settings()
    dataset = get_dataset(config.data.dataset, settings)
    refuse_superseded(dataset.id)  # e.g. a patient was erased from it: train on the successor
    if config.task is TrainTask.SEGMENTATION:
        from training.segmentation.run import train_segmentation

        return train_segmentation(config, dataset, settings=settings, register=register)
    if dataset.manifest.series is not None:
        raise ConfigError(
            f"dataset {dataset.short_id} is a segmentation dataset: set task: segmentation in the config"
        )
    label_names = dataset.manifest.label_names
    if len(label_names) != 2:
        raise ConfigError(f"dataset {dataset.short_id} has {len(label_names)} classes; evaluation needs 2")
    rows = {split: materialize(dataset, split, settings) for split in ("train", "val", "test")}
    for split, split_rows in rows.items():
        if not split_rows:
            raise ConfigError(
                f"dataset {dataset.short_id} has no {split} images: use a larger dataset or split"
            )
    spec = config.data.preprocessing()
    with open_run(config, dataset, settings) as ctx:
        run_id, tracking_uri = ctx.run_id, ctx.tracking_uri
        job = FitJob(
            train_rows=rows["train"],
            val_rows=rows["val"],
            spec=spec,
            network=str(config.model.network),
            num_classes=len(label_names),
            **ctx.job_kwargs(config),
        )
        result = fit(job)
        log_fit_metrics(result)
        module = ClassifierModule(str(config.model.network), len(label_names), dropout=config.model.dropout)
        module.load_state_dict(result.state_dict, strict=False)
        network = module.net.eval()
        torch.set_num_threads(max(os.cpu_count() or 1, 1))
        # Temperature scaling fitted on validation: every reported figure is of the calibrated
        # probability, which is what serving returns (the temperature is registered with the model).
        test_logits = predict_logits(network, rows["test"], spec)
        report = evaluate_logits(
            np.array([r["label"] for r in rows["val"]]), predict_logits(network, rows["val"], spec),
            np.array([r["label"] for r in rows["test"]]), test_logits, rows["test"], config.evaluation,
        )  # fmt: skip
        temperature = report.calibration.temperature if report.calibration else 1.0
        test_scores = apply_temperature(test_logits, temperature)[:, 1]
        mlflow.log_metrics(report.flat_metrics())
        mlflow.log_dict(report.to_dict(), "evaluation/evaluation.json")
        with tempfile.TemporaryDirectory() as tmp:
            for path in save_plots(report, Path(tmp)):
                mlflow.log_artifact(str(path), "evaluation")
        card = render_model_card(
            config=config,
            dataset_summary=dataset.manifest.summary(),
            report=report,
            run_id=run_id,
            git_commit=_git_commit(),
            versions=_versions(),
            label_names=label_names,
            images_per_s=result.steady_images_per_s,
        )
        mlflow.log_text(card, "model_card.md")
        do_register = config.registry.enabled if register is None else register
        registration = log_and_register(
            network,
            network=str(config.model.network),
            spec=spec,
            label_names=label_names,
            dataset_version=dataset.id,
            report=report,
            run_id=run_id,
            tracking_uri=tracking_uri,
            model_card=card,
            model_name=config.registry.model_name if do_register else None,
            torchscript=config.registry.torchscript,
        )
        record_post_training_evidence(
            run_id=run_id,
            dataset=dataset,
            network=network,
            rows=rows,
            spec=spec,
            label_names=label_names,
            test_scores=test_scores,
            report=report,
            registration=registration,
            gradcam_layer=gradcam_layer(str(config.model.network)),
            settings=settings,
        )
    return TrainOutcome.of(ctx, dataset, registration, report, result)
