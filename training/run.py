"""One training run end to end: dataset version -> fit -> evaluate -> log -> register.

``train(config)`` is what ``radgate train`` and ``radgate demo`` call. The MLflow store is
created here, in the driver, before any Ray worker starts (two processes migrating a fresh
SQLite store at once crash), and workers log to the run this function opened.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from governance.settings import Settings, get_settings
from imaging.datasets import get_dataset, materialize
from training.config import ConfigError, TrainConfig, TrainTask
from training.evaluation import apply_temperature, evaluate_logits, save_plots
from training.evidence import record_post_training_evidence, refuse_superseded
from training.launch import FitJob, fit
from training.networks import gradcam_layer
from training.preprocess import IMAGE_KEY, PreprocessingSpec
from training.tracking import (
    RunContext,
    TrainOutcome,
    ensure_experiment,
    git_commit,
    log_fit_metrics,
    open_run,
    package_versions,
)

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
            git_commit=git_commit(),
            versions=package_versions(),
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
