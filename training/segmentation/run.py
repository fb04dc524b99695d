"""``task: segmentation`` runs: the classification run path (``training.run``) with volumes.

Dataset version (series + label volumes) -> :func:`imaging.volumes.materialize_segmentation`
NIfTI rows -> fit (plain Lightning or Ray Train, :mod:`training.launch`) -> Dice and HD95 per
structure and subgroup on the test split -> model card -> registration as a pending-review
version tagged ``radgate.task=segmentation`` with ``segmentation.json`` -> post-training evidence.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from governance.settings import Settings
from training.config import ConfigError, TrainConfig
from training.segmentation.data import SegmentationAugment, SegmentationFitOptions
from training.segmentation.spec import SegmentationSpec

if TYPE_CHECKING:
    from imaging.datasets import DatasetVersion
    from training.tracking import TrainOutcome

__all__ = ["fit_options", "segmentation_spec", "train_segmentation"]

SPLITS = ("train", "val", "test")


def segmentation_spec(config: TrainConfig, label_map: dict[int, str]) -> SegmentationSpec:
    """The spec of the model ``config`` trains on a dataset with ``label_map`` (0 = background)."""
    if config.segmentation is None:
        raise ConfigError("task: segmentation needs a segmentation: section")
    structures = {int(k): name for k, name in label_map.items() if int(k) != 0}
    try:
        return config.segmentation.spec(structures)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"the dataset's labels cannot form a segmentation spec: {exc}") from None


def fit_options(config: TrainConfig) -> SegmentationFitOptions:
    section = config.segmentation
    if section is None:
        raise ConfigError("task: segmentation needs a segmentation: section")
    augment = config.data.augment
    return SegmentationFitOptions(
        channels=tuple(section.channels),
        samples_per_volume=section.samples_per_volume,
        pos_fraction=section.pos_fraction,
        sw_batch_size=section.sw_batch_size,
        augment=SegmentationAugment(
            affine_prob=augment.affine_prob,
            rotate_rad=augment.rotate_rad,
            scale=augment.scale,
            noise_prob=augment.noise_prob,
        ),
    )


def _rows(dataset: DatasetVersion, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    from imaging.datasets.manifest import Task
    from imaging.volumes import materialize_segmentation

    if dataset.manifest.kind is not Task.SEGMENTATION:
        raise ConfigError(
            f"dataset {dataset.short_id} is not a segmentation dataset: create one with "
            "`radgate dataset create NAME --task segmentation --labels FILE`"
        )
    every = materialize_segmentation(dataset, settings.home / "cache" / "segmentation", settings=settings)
    rows = {split: [r for r in every if r["split"] == split] for split in SPLITS}
    for split, split_rows in rows.items():
        if not split_rows:
            raise ConfigError(
                f"dataset {dataset.short_id} has no {split} series: use a larger dataset or split"
            )
    return rows


def train_segmentation(
    config: TrainConfig, dataset: DatasetVersion, *, settings: Settings, register: bool | None = None
) -> TrainOutcome:
    """Fit, evaluate, log and (by default) register a 3D segmentation model (see module docstring)."""
    import mlflow

    from training.evidence import record_post_training_evidence
    from training.launch import FitJob, fit
    from training.registration import log_and_register
    from training.segmentation.evaluation import evaluate_segmentation
    from training.segmentation.model_card import render_segmentation_card
    from training.segmentation.module import SegmentationModule
    from training.tracking import TrainOutcome, git_commit, log_fit_metrics, open_run, package_versions

    spec = segmentation_spec(config, dataset.manifest.label_map)
    options = fit_options(config)
    rows = _rows(dataset, settings)
    with open_run(config, dataset, settings) as ctx:
        mlflow.log_dict(spec.to_dict(), "segmentation.json")
        job = FitJob(
            train_rows=rows["train"],
            val_rows=rows["val"],
            spec=spec,
            network=spec.network,
            num_classes=spec.num_classes,
            segmentation=options,
            **ctx.job_kwargs(config),
        )
        result = fit(job)
        log_fit_metrics(result)
        module = SegmentationModule(spec.to_dict(), channels=options.channels, dropout=config.model.dropout)
        module.load_state_dict(result.state_dict, strict=False)
        network = module.net.eval()
        torch.set_num_threads(max(os.cpu_count() or 1, 1))
        report = evaluate_segmentation(
            network, rows["test"], spec, min_subgroup_size=config.evaluation.min_subgroup_size,
            sw_batch_size=options.sw_batch_size,
        )  # fmt: skip
        mlflow.log_metrics(report.flat_metrics())
        mlflow.log_dict(report.to_dict(), "evaluation/evaluation.json")
        card = render_segmentation_card(
            config=config, spec=spec, dataset_summary=dataset.manifest.summary(), report=report,
            run_id=ctx.run_id, git_commit=git_commit(), versions=package_versions(),
            volumes_per_s=result.steady_images_per_s,
        )  # fmt: skip
        mlflow.log_text(card, "model_card.md")
        do_register = config.registry.enabled if register is None else register
        registration = log_and_register(
            network,
            network=spec.network,
            spec=spec,
            label_names=["background", *spec.structures],
            dataset_version=dataset.id,
            report=report,
            run_id=ctx.run_id,
            tracking_uri=ctx.tracking_uri,
            model_card=card,
            model_name=config.registry.model_name if do_register else None,
            torchscript=config.registry.torchscript,
        )
        record_post_training_evidence(
            run_id=ctx.run_id, dataset=dataset, network=network, rows=rows, spec=spec,
            label_names=["background", *spec.structures], test_scores=_no_scores(), report=report,
            registration=registration, gradcam_layer=None, settings=settings,
        )  # fmt: skip
    return TrainOutcome.of(ctx, dataset, registration, report, result)


def _no_scores() -> Any:
    """Segmentation has no per-image score for the 2D evidence steps (they are skipped)."""
    import numpy as np

    return np.zeros(0)
