"""Evidence a training run leaves for review, gathered after the fit (lead's integration).

- ``radgate.dataset.deidentified``: every instance of the dataset version is in the catalog,
  de-identified under a shipped standard profile with the current key, with lineage;
- dataset quality and bias report (``imaging.quality``) logged to the run;
- ``max_subgroup_gap`` as a run metric (the policy reads run metrics);
- the monitoring reference profile (``training.reference_profile``);
- explanation evidence: sanity check, faithfulness, gallery (``training.explain.post_training``).

Each piece is recorded or, if it cannot be computed, recorded as missing with the reason; a
missing piece fails the policy check that needs it, never the training run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from governance.settings import Settings
from governance.tags import Tag
from training.segmentation.spec import SegmentationSpec

__all__ = [
    "SupersededDatasetError",
    "dataset_deidentified",
    "record_post_training_evidence",
    "refuse_superseded",
]

log = logging.getLogger(__name__)
DEIDENTIFIED_TAG = Tag.DATASET_DEIDENTIFIED


class SupersededDatasetError(RuntimeError):
    """The dataset version was superseded (e.g. after an erasure): train on its successor."""


def refuse_superseded(dataset_id: str) -> None:
    from imaging.compliance import superseded_by

    successor = superseded_by(dataset_id)
    if successor is not None:
        hint = f"use {successor[:16]}" if successor else "no successor exists"
        raise SupersededDatasetError(f"dataset version {dataset_id[:16]} is superseded ({hint})")


def dataset_deidentified(dataset: Any, settings: Settings) -> tuple[bool, str]:
    """True when each item is a catalog instance made by a shipped profile under this key."""
    from sqlalchemy import select

    from governance.catalog import Instance, LineageEvent, open_catalog
    from governance.keys import project_key_id
    from imaging.deid.profile import profile_dir

    standard = {f"{p.stem}@v" for p in profile_dir().glob("*.yaml")}
    key_id = project_key_id(settings)  # the id only: training pseudonymises nothing
    wanted = {item.sha256 for item in dataset.manifest.items}
    # Segmentation versions: every slice of every series (label volumes are not DICOM inputs).
    wanted |= {sha for series in dataset.manifest.series or [] for sha in series.instances}
    if not wanted:
        return False, "the dataset version lists no instances"
    with open_catalog(settings).session() as session:
        rows = session.execute(
            select(Instance.sha256, Instance.profile, Instance.key_id).where(Instance.sha256.in_(wanted))
        ).all()
        traced = set(
            session.scalars(select(LineageEvent.output_sha256).where(LineageEvent.output_sha256.in_(wanted)))
        )
    found = {sha: (profile, key) for sha, profile, key in rows}
    if set(found) != wanted:
        return False, f"{len(wanted - set(found))} items are not catalog instances"
    if any(not any(profile.startswith(s) for s in standard) for profile, _ in found.values()):
        return False, "items de-identified under a profile that is not shipped with RadGate"
    if any(key != key_id for _, key in found.values()):
        return False, "items de-identified under another project key"
    if traced != wanted:
        return False, f"{len(wanted - traced)} items have no lineage record"
    return True, f"{len(wanted)} instances, standard profiles, lineage complete"


def record_post_training_evidence(
    *,
    run_id: str,
    dataset: Any,
    network: torch.nn.Module,
    rows: dict[str, list[dict[str, Any]]],
    spec: Any,
    label_names: list[str],
    test_scores: np.ndarray,
    report: Any,
    registration: Any,
    gradcam_layer: str | None,
    settings: Settings,
) -> dict[str, str]:
    """Record every piece; returns piece -> "ok" or the reason it is missing."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(settings.resolved_mlflow_uri)
    outcome: dict[str, str] = {}

    ok, why = dataset_deidentified(dataset, settings)
    client.set_tag(run_id, DEIDENTIFIED_TAG, str(ok).lower())
    client.set_tag(run_id, Tag.DATASET_DEIDENTIFIED_DETAIL, why)
    if registration.name:
        client.set_model_version_tag(
            registration.name, registration.version, DEIDENTIFIED_TAG, str(ok).lower()
        )
    outcome["dataset_deidentified"] = "ok" if ok else why

    gap = report.largest_gap[2]
    if not math.isnan(gap):
        client.log_metric(run_id, "max_subgroup_gap", float(gap))
    outcome["max_subgroup_gap"] = "ok" if not math.isnan(gap) else "no subgroup large enough"

    steps: list[tuple[str, Any]] = []
    if isinstance(spec, SegmentationSpec):
        # The dataset quality report reads 2D instances, the reference profile and Grad-CAM
        # gallery 2D images: none applies to series; segmentation explanations are made on
        # demand (training.explain), not recorded here.
        for piece in ("dataset_report", "reference_profile", "explanations"):
            outcome[piece] = "not applicable (segmentation)"
    else:
        steps += [
            ("dataset_report", lambda: _dataset_report(dataset, run_id, settings)),
            (
                "reference_profile",
                lambda: _reference_profile(run_id, network, rows, spec, label_names, settings),
            ),
            (
                "explanations",
                lambda: _explanations(
                    run_id, network, rows, spec, label_names, test_scores, registration, gradcam_layer,
                    settings,
                ),
            ),
        ]  # fmt: skip
    for name, step in steps:
        try:
            step()
            outcome[name] = "ok"
        except Exception as exc:
            log.warning("post-training %s not recorded: %s", name, type(exc).__name__)
            outcome[name] = f"not recorded ({type(exc).__name__})"
    _audit_training(run_id, dataset, registration, outcome)
    mlflow.set_tracking_uri(settings.resolved_mlflow_uri)
    client.set_tag(run_id, Tag.EVIDENCE, ",".join(f"{k}={v}" for k, v in sorted(outcome.items()))[:5000])
    return outcome


def _audit_training(run_id: str, dataset: Any, registration: Any, outcome: dict[str, str]) -> None:
    """Training and registration enter the audit trail (ids and hashes only)."""
    from governance.audit import record
    from governance.auth import current_actor

    actor, role = current_actor()
    record(
        actor, "train.run", f"run:{run_id}", {"dataset_version": dataset.id, "evidence": outcome}, role=role
    )
    if registration.name:
        record(
            actor,
            "model.register",
            f"model:{registration.name}/{registration.version}",
            {"run_id": run_id, "artifact_sha256": registration.artifact_sha256, "status": "pending_review"},
            role=role,
        )


def _dataset_report(dataset: Any, run_id: str, settings: Settings) -> None:
    from imaging.quality import log_dataset_report

    log_dataset_report(dataset, run_id=run_id, settings=settings)


def _reference_profile(
    run_id: str, network: torch.nn.Module, rows: Any, spec: Any, label_names: list[str], settings: Settings
) -> None:
    from training.reference_profile import compute_reference_profile, log_reference_profile

    profile = compute_reference_profile(network, rows["train"], spec, label_names=label_names)
    log_reference_profile(run_id, profile, tracking_uri=settings.resolved_mlflow_uri)


def _explanations(
    run_id: str,
    network: torch.nn.Module,
    rows: Any,
    spec: Any,
    label_names: list[str],
    test_scores: np.ndarray,
    registration: Any,
    gradcam_layer: str | None,
    settings: Settings,
) -> None:
    from training.explain.post_training import explain_after_training
    from training.preprocess import IMAGE_KEY

    transform = spec.eval_transform()
    images = torch.stack(
        [
            torch.as_tensor(np.asarray(transform({IMAGE_KEY: r[IMAGE_KEY]})[IMAGE_KEY])).float()
            for r in rows["test"]
        ]
    )
    explain_after_training(
        network,
        images,
        [int(r["label"]) for r in rows["test"]],
        [float(s) for s in test_scores],
        run_id=run_id,
        model_name=registration.name,
        model_version=registration.version,
        label_names=label_names,
        gradcam_layer=gradcam_layer,
        tracking_uri=settings.resolved_mlflow_uri,
    )
