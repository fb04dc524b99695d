"""MLflow records of explanation checks, where governance's policy reads them.

The sanity check lands as run metrics (``saliency_randomization_spearman``...), run tags, the
same values as model-version tags (``radgate.saliency_sanity`` = passed | failed, the policy's
check), and ``explain/sanity.json`` in the run's artifacts.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from governance.tags import Tag
from training.explain.faithfulness import FaithfulnessResult
from training.explain.sanity import SANITY_METRIC, SanityResult

__all__ = ["log_faithfulness", "log_sanity_result", "sanity_threshold_from_policy"]


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        from governance.settings import get_settings

        tracking_uri = get_settings().resolved_mlflow_uri
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def sanity_threshold_from_policy(model_name: str) -> float | None:
    """The policy's metric check on ``saliency_randomization_spearman`` for this model, if any."""
    from governance.policy import CheckSource, PolicyError, load_policy

    try:
        policy = load_policy().for_model(model_name)
    except (PolicyError, ValueError):
        return None
    for check in policy.checks:
        if check.source is CheckSource.METRIC and check.key == SANITY_METRIC:
            return float(check.threshold)
    return None


def log_sanity_result(
    result: SanityResult,
    *,
    run_id: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Log to the run (metrics, tags, JSON artifact) and tag the model version, where given."""
    client = _client(tracking_uri)
    if run_id:
        for metric, number in result.metrics().items():
            client.log_metric(run_id, metric, number)
        for step, cascade in enumerate(result.cascade):
            client.log_metric(run_id, "saliency_cascade_spearman", cascade.spearman, step=step)
            client.log_metric(run_id, "saliency_cascade_ssim", cascade.ssim, step=step)
        for key, value in result.tags().items():
            client.set_tag(run_id, key, value)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "sanity.json"
            path.write_text(result.to_json())
            client.log_artifact(run_id, str(path), artifact_path="explain")
    if model_name and model_version:
        for key, value in result.tags().items():
            client.set_model_version_tag(model_name, str(model_version), key, value)
        if result.reasons:
            reasons = "; ".join(result.reasons)[:5000]
            client.set_model_version_tag(model_name, str(model_version), Tag.SALIENCY_SANITY_REASONS, reasons)


def log_faithfulness(
    results: list[FaithfulnessResult], *, run_id: str, tracking_uri: str | None = None
) -> None:
    """Deletion / insertion areas per method as run metrics, plus ``explain/faithfulness.json``."""
    client = _client(tracking_uri)
    for result in results:
        for metric, number in result.metrics().items():
            client.log_metric(run_id, metric, number)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "faithfulness.json"
        path.write_text(json.dumps([r.__dict__ for r in results], indent=2, sort_keys=True))
        client.log_artifact(run_id, str(path), artifact_path="explain")
