"""Drift alerts: Prometheus gauges, audit entries and an optional signed webhook POST.

Gauges live in ``prometheus_client``'s default registry, so serving's ``/metrics`` (e.g.
``prometheus_client.make_asgi_app()``) exposes them with no extra wiring:

* ``radgate_drift_p_adjusted{model,feature}``, ``radgate_drift_effect{model,feature}``,
  ``radgate_drift_feature_drifted{model,feature}`` (0/1);
* ``radgate_drift_alert{model}`` (0/1), ``radgate_drift_live_samples{model}``,
  ``radgate_drift_last_check_timestamp_seconds{model}``;
* ``radgate_feedback_total{model,verdict}`` (counter; verdict ``agree``/``disagree``).

Webhook: ``POST`` of the alert JSON with ``X-RadGate-Signature: sha256=<hex HMAC-SHA256 of the
body>`` under the secret in the environment variable the config names, and
``X-RadGate-Timestamp``; :func:`verify_signature` checks it on the receiving side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge

from governance.audit import record
from serving.monitoring.config import AlertSettings
from serving.monitoring.drift import DriftResult

__all__ = [
    "FEEDBACK_TOTAL",
    "SIGNATURE_HEADER",
    "publish_gauges",
    "raise_alert",
    "send_webhook",
    "sign_payload",
    "verify_signature",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RadGate-Signature"
TIMESTAMP_HEADER = "X-RadGate-Timestamp"

P_ADJUSTED = Gauge(
    "radgate_drift_p_adjusted", "Corrected p-value of the last drift test", ["model", "feature"]
)
EFFECT = Gauge(
    "radgate_drift_effect", "Effect size of the last drift test (KS D, PSI, MMD^2)", ["model", "feature"]
)
FEATURE_DRIFTED = Gauge(
    "radgate_drift_feature_drifted", "1 when the feature drifted at the last check", ["model", "feature"]
)
ALERT = Gauge("radgate_drift_alert", "1 when the last drift check raised an alert", ["model"])
LIVE_SAMPLES = Gauge("radgate_drift_live_samples", "Live requests in the last drift window", ["model"])
LAST_CHECK = Gauge(
    "radgate_drift_last_check_timestamp_seconds", "Unix time of the last drift check", ["model"]
)
FEEDBACK_TOTAL = Counter("radgate_feedback", "Clinician feedback received", ["model", "verdict"])


def publish_gauges(model: str, result: DriftResult, alert: bool) -> None:
    """Set every gauge for ``model`` from one check."""
    for test in result.tests:
        if test.skipped:
            continue
        P_ADJUSTED.labels(model, test.feature).set(test.p_adjusted)
        EFFECT.labels(model, test.feature).set(test.effect)
        FEATURE_DRIFTED.labels(model, test.feature).set(1 if test.drifted else 0)
    ALERT.labels(model).set(1 if alert else 0)
    LIVE_SAMPLES.labels(model).set(result.n_live)
    LAST_CHECK.labels(model).set(time.time())


def sign_payload(body: bytes, secret: str, timestamp: str) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(body: bytes, secret: str, timestamp: str, signature: str) -> bool:
    return hmac.compare_digest(sign_payload(body, secret, timestamp), signature)


def send_webhook(payload: Mapping[str, Any], settings: AlertSettings) -> dict[str, Any]:
    """POST the alert; never raises (the outcome is returned and audited by the caller)."""
    import httpx

    if not settings.webhook_url:
        return {"sent": False, "reason": "no webhook configured"}
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    secret = os.environ.get(settings.webhook_secret_env)
    if secret:
        headers[SIGNATURE_HEADER] = sign_payload(body, secret, timestamp)
    try:
        response = httpx.post(
            settings.webhook_url, content=body, headers=headers, timeout=settings.webhook_timeout_s
        )
    except httpx.HTTPError as exc:
        log.warning("drift webhook failed: %s", type(exc).__name__)
        return {"sent": False, "reason": type(exc).__name__}
    return {"sent": response.is_success, "status": response.status_code, "signed": bool(secret)}


def raise_alert(
    model: str,
    version: str,
    result: DriftResult,
    report: Mapping[str, Any],
    settings: AlertSettings,
    *,
    actor: str = "radgate-monitor",
) -> dict[str, Any]:
    """Audit the alert and send the webhook; returns the webhook outcome."""
    drifted = [t for t in result.tests if t.drifted]
    payload = {
        "event": "radgate.drift.alert",
        "model": model,
        "model_version": version,
        "window": report.get("window"),
        "n_live": result.n_live,
        "drifted_features": [
            {
                "feature": t.feature,
                "test": t.test,
                "p_adjusted": t.p_adjusted,
                "effect": t.effect,
                "effect_name": t.effect_name,
            }
            for t in drifted
        ],
        "report_sha256": report.get("report_sha256"),
    }
    outcome = send_webhook(payload, settings)
    record(
        actor,
        "monitoring.drift.alert",
        f"model:{model}/{version}",
        {
            "drifted_features": [t.feature for t in drifted],
            "n_live": result.n_live,
            "webhook": outcome,
            "report_sha256": report.get("report_sha256"),
        },
        role="system",
    )
    return outcome
