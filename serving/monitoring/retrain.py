"""Retraining from feedback: a new dataset version, the production version's config, a new pending
version and a champion/challenger comparison on a fixed test split, all in MLflow and the audit log.

The fixed test split is the champion's dataset's test split: the new dataset version leaves its
patients out (``feedback_dataset(hold_out="test")``), so the challenger never trains on it; any
instance the new version still holds in train or val is excluded from the comparison as well.
Promotion still goes through the governance policy: the challenger is registered
``pending_review`` like any other version.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from governance.audit import record
from governance.auth import Principal, Role, require_role
from governance.settings import Settings, get_settings
from governance.tags import Tag
from serving.monitoring.feedback import feedback_dataset

__all__ = ["COMPARISON_ARTIFACT", "RETRAIN_ROLES", "RetrainOutcome", "retrain"]

RETRAIN_ROLES = (Role.ML_ENGINEER,)
COMPARISON_ARTIFACT = "monitoring/champion_challenger.json"


@dataclass
class RetrainOutcome:
    dataset_version: str
    champion_version: str
    challenger_version: str | None
    run_id: str
    comparison: dict[str, Any]


def _scores(model: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    from training.run import predict_scores

    return predict_scores(model.module, rows, model.preprocessing)


def _metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None) -> dict[str, float | None]:
    from training.evaluation import binary_metrics

    metrics = binary_metrics(labels, scores, 0.5 if threshold is None else threshold)
    return {k: (None if math.isnan(v) else float(v)) for k, v in metrics.items()}


def retrain(
    principal: Principal,
    model: str,
    *,
    alias: str = "production",
    version: str | None = None,
    dataset_name: str | None = None,
    overrides: list[str] | None = None,
    settings: Settings | None = None,
) -> RetrainOutcome:
    """Retrain ``model`` from its ``alias`` version's (or ``version``'s) config on its dataset plus
    feedback labels."""
    from mlflow.tracking import MlflowClient

    from imaging.datasets import get_dataset, materialize
    from serving.approved import load_approved
    from training.config import TrainConfig, apply_overrides
    from training.registry import load_model
    from training.run import train

    require_role(principal, *RETRAIN_ROLES)
    settings = settings or get_settings()
    uri = settings.resolved_mlflow_uri
    # The champion is what serves: retraining starts only from a version the gate allows now.
    champion = load_approved(f"{model}/{version}" if version else f"{model}@{alias}", tracking_uri=uri)
    if champion.run_id is None or champion.dataset_version is None:
        raise LookupError(f"{model}@{alias} has no training run or dataset version to retrain from")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with tempfile.TemporaryDirectory() as tmp:
        config_data = json.loads(
            Path(client.download_artifacts(champion.run_id, "config.json", tmp)).read_text()
        )
    base = get_dataset(champion.dataset_version, settings)
    created = feedback_dataset(
        model, dataset_name or f"{base.name}-feedback", base=base.id, hold_out="test", settings=settings
    )
    new = created.version
    config_data["data"]["dataset"] = new.id
    config_data["registry"]["model_name"] = model
    config_data["registry"]["enabled"] = True
    config_data["run"]["resume_from"] = None
    config_data["run"]["run_name"] = f"retrain-{model}-from-v{champion.version}"
    config = TrainConfig.model_validate(apply_overrides(config_data, overrides or []))
    outcome = train(config, settings=settings)
    challenger = load_model(f"{model}/{outcome.model_version}", tracking_uri=uri)
    learnt = {i.sha256 for i in new.manifest.items if str(i.split) in ("train", "val")}
    rows = [r for r in materialize(base, "test", settings) if r["sha256"] not in learnt]
    comparison: dict[str, Any] = {
        "test_split": {
            "dataset_version": base.id,
            "instances": len(rows),
            "excluded_seen_by_challenger": len(base.manifest.items_in("test")) - len(rows),
        },
        "champion": {"version": champion.version},
        "challenger": {"version": challenger.version, "dataset_version": new.id},
    }
    if rows:
        labels = np.array([r["label"] for r in rows])
        for key, candidate in (("champion", champion), ("challenger", challenger)):
            comparison[key]["metrics"] = _metrics(labels, _scores(candidate, rows), candidate.threshold)
    client.log_dict(outcome.run_id, comparison, COMPARISON_ARTIFACT)
    for key in ("champion", "challenger"):
        for metric in ("auroc", "sensitivity", "specificity"):
            value = comparison[key].get("metrics", {}).get(metric)
            if value is not None:
                client.log_metric(outcome.run_id, f"{key}_fixed_test_{metric}", value)
    client.set_tag(outcome.run_id, Tag.RETRAIN_CHAMPION_VERSION, champion.version)
    record(
        principal.name,
        "monitoring.retrain",
        f"model:{model}/{challenger.version}",
        {
            "champion_version": champion.version,
            "dataset_version": new.id,
            "run_id": outcome.run_id,
            "fixed_test_instances": len(rows),
        },
        role=str(principal.role),
    )
    return RetrainOutcome(new.id, champion.version, outcome.model_version, outcome.run_id, comparison)
