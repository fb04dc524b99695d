"""Drift checks: one model over a window (:func:`run_drift_check`), all served models
(:func:`run_drift_job`), or periodically in a background thread (:class:`DriftScheduler`)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from governance.audit import record
from governance.catalog import open_catalog, utcnow
from governance.settings import Settings, get_settings
from serving.monitoring.alerts import publish_gauges, raise_alert
from serving.monitoring.config import MonitoringConfig, load_monitoring_config, parse_window
from serving.monitoring.drift import DriftResult, compare
from serving.monitoring.live import MonitoringError, purge_expired_inputs
from serving.monitoring.models import DriftRun, LiveRecord
from serving.monitoring.report import write_report
from training.reference_profile import ReferenceProfile, load_reference_profile

if TYPE_CHECKING:
    from serving.config import ServeConfig

__all__ = [
    "DriftCheck",
    "DriftScheduler",
    "NoLiveData",
    "run_drift_check",
    "run_drift_job",
    "start_serving_drift",
]

log = logging.getLogger(__name__)


class NoLiveData(MonitoringError):
    """No request of this model was recorded in the window."""


@dataclass
class DriftCheck:
    """What one check found and wrote."""

    model: str
    version: str
    result: DriftResult
    alert: bool
    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)
    webhook: dict[str, Any] | None = None


@lru_cache(maxsize=16)
def _profile(run_id: str, tracking_uri: str) -> ReferenceProfile:
    return load_reference_profile(run_id, tracking_uri=tracking_uri)


def _run_id(name: str, version: str, tracking_uri: str) -> str:
    from training.registry import resolve_model_version

    run_id = resolve_model_version(f"{name}/{version}", tracking_uri=tracking_uri).run_id
    if not run_id:
        raise MonitoringError(f"model {name} version {version} has no training run")
    return str(run_id)


def _as_utc(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_drift_check(
    model: str,
    *,
    window: timedelta | str | None = None,
    version: str | None = None,
    out_dir: Path | None = None,
    now: datetime | None = None,
    config: MonitoringConfig | None = None,
    settings: Settings | None = None,
    actor: str = "radgate-monitor",
    all_plots: bool = False,
) -> DriftCheck:
    """Compare ``model``'s live requests in ``[now - window, now]`` with its reference profile.

    ``version`` defaults to the version that served the latest request in the window. Writes the
    JSON and HTML reports, sets the Prometheus gauges, records the run in the catalog, audits it
    (``monitoring.drift.checked``) and, when thresholds are crossed, raises the alert
    (``monitoring.drift.alert``, webhook). Raises :class:`NoLiveData`, :class:`MonitoringError`,
    ``FileNotFoundError`` (no reference profile) or ``training.registry.ModelNotFoundError``.
    """
    config = config or load_monitoring_config()
    settings = settings or get_settings()
    span = parse_window(window or config.drift.window) if not isinstance(window, timedelta) else window
    end = _as_utc(now or utcnow())
    start = end - span
    catalog = open_catalog(settings)
    with catalog.session() as session:
        query = select(LiveRecord).where(
            LiveRecord.model_name == model, LiveRecord.created_at >= start, LiveRecord.created_at <= end
        )
        if version is not None:
            query = query.where(LiveRecord.model_version == str(version))
        records = list(session.execute(query.order_by(LiveRecord.created_at)).scalars())
    if not records:
        raise NoLiveData(
            f"no request of model {model!r} recorded between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M} UTC"
        )
    version = str(version or records[-1].model_version)
    records = [r for r in records if r.model_version == version]
    tracking_uri = settings.resolved_mlflow_uri
    run_id = _run_id(model, version, tracking_uri)
    profile = _profile(run_id, tracking_uri)
    rows = [r.features for r in records]
    embeddings = np.asarray([r.embedding for r in records], dtype=np.float64).reshape(len(records), -1)
    result = compare(profile, rows, embeddings, config.drift)
    drift = result.to_dict()
    report: dict[str, Any] = {
        "model": model,
        "model_version": version,
        "reference": {"run_id": run_id, "n_images": profile.n_images},
        "window": {"start": start.isoformat(), "end": end.isoformat(), "seconds": span.total_seconds()},
        "drift": drift,
        "config": config.drift.model_dump(mode="json"),
        "created_at": utcnow().isoformat(),
    }
    report["report_sha256"] = hashlib.sha256(json.dumps(drift, sort_keys=True).encode()).hexdigest()
    alert = not result.insufficient and len(result.drifted_features) >= config.alerts.min_drifted_features
    report["alert"] = alert
    if out_dir is None:
        out_dir = settings.home / "monitoring" / "reports" / model / end.strftime("%Y%m%dT%H%M%SZ")
    paths = write_report(report, result, profile, rows, embeddings, out_dir, all_plots=all_plots)
    publish_gauges(model, result, alert)
    with catalog.session() as session:
        session.add(
            DriftRun(
                model_name=model,
                model_version=version,
                window_start=start,
                window_end=end,
                n_live=result.n_live,
                drifted=alert,
                summary={
                    "drifted_features": result.drifted_features,
                    "report_sha256": report["report_sha256"],
                },
            )
        )
    record(
        actor,
        "monitoring.drift.checked",
        f"model:{model}/{version}",
        {
            "n_live": result.n_live,
            "drifted_features": result.drifted_features,
            "alert": alert,
            "insufficient_data": result.insufficient,
            "report_sha256": report["report_sha256"],
        },
        role="system" if actor == "radgate-monitor" else "",
    )
    webhook = raise_alert(model, version, result, report, config.alerts, actor=actor) if alert else None
    return DriftCheck(model, version, result, alert, report, paths, webhook)


def run_drift_job(
    models: list[str] | None = None, *, window: str | None = None, settings: Settings | None = None
) -> list[DriftCheck]:
    """One pass over ``models`` (default: every model with live records); a model that cannot be
    checked is logged and skipped. Also purges sealed inputs past their feedback window."""
    settings = settings or get_settings()
    if models is None:
        with open_catalog(settings).session() as session:
            models = sorted(set(session.execute(select(LiveRecord.model_name).distinct()).scalars()))
    checks = []
    for model in models:
        try:
            checks.append(run_drift_check(model, window=window, settings=settings))
        except (MonitoringError, FileNotFoundError, LookupError) as exc:
            log.warning("drift check of %s skipped: %s", model, exc)
    purge_expired_inputs(settings=settings)
    return checks


class DriftScheduler:
    """Runs :func:`run_drift_job` every ``interval_s`` seconds in a daemon thread."""

    def __init__(
        self, models: list[str] | None = None, *, interval_s: float = 3600, window: str | None = None
    ) -> None:
        self.models, self.interval_s, self.window = models, interval_s, window
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="radgate-drift", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                run_drift_job(self.models, window=self.window)
            except Exception:  # keep the scheduler alive; the next pass retries
                log.exception("drift job failed")


def start_serving_drift(config: ServeConfig) -> DriftScheduler | None:
    """Start the periodic drift checks a serving config asks for (``drift:``); ``None`` when it
    asks for none. Called by the serving ingress; the checks run in its process, so their gauges
    are on its ``/metrics``."""
    if config.drift is None:
        return None
    models = config.drift.models or [m.name for m in config.models]
    scheduler = DriftScheduler(models, interval_s=config.drift.interval_s, window=config.drift.window)
    scheduler.start()
    log.info("drift checks of %s every %.0f s", ", ".join(models), config.drift.interval_s)
    return scheduler
