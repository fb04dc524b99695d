"""Log a dataset quality report to MLflow: what training calls for the version it trains on.

Call inside the training run (``mlflow.start_run`` active), after the dataset is resolved::

    from imaging.quality import log_dataset_report
    log_dataset_report(dataset)            # or log_dataset_report(dataset, run_id=run_id)

It logs ``dataset_quality/report.json``, ``report.html`` and the plots as artifacts, the
``dq_*`` numbers as metrics and the tag ``radgate.dataset.quality`` = ``passed`` | ``warnings``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from governance.settings import Settings, get_settings
from governance.tags import Tag
from imaging.datasets import DatasetVersion
from imaging.quality.render import write_report
from imaging.quality.report import DatasetReport, build_report

__all__ = ["ARTIFACT_DIR", "QUALITY_TAG", "log_dataset_report"]

ARTIFACT_DIR = "dataset_quality"
QUALITY_TAG = Tag.DATASET_QUALITY


def log_dataset_report(
    version: DatasetVersion,
    *,
    run_id: str | None = None,
    report: DatasetReport | None = None,
    settings: Settings | None = None,
) -> DatasetReport:
    """Build (unless given) and log the report to ``run_id`` or the active MLflow run."""
    import mlflow
    from mlflow import MlflowClient

    settings = settings or get_settings()
    report = report or build_report(version, settings=settings)
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("log_dataset_report needs an active MLflow run or a run_id")
        run_id = active.info.run_id
        uri = mlflow.get_tracking_uri()
    else:
        uri = settings.resolved_mlflow_uri
    client = MlflowClient(tracking_uri=uri)
    with tempfile.TemporaryDirectory() as tmp:
        write_report(report, Path(tmp))
        client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
    for key, value in report.metrics().items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, QUALITY_TAG, report.status)
    client.set_tag(
        run_id,
        Tag.DATASET_QUALITY_WARNINGS,
        ",".join(sorted({w.code for w in report.warnings}))[:500] or "none",
    )
    return report
