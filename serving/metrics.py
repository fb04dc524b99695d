"""Prometheus metrics of the ingress (its own registry, so tests and several apps do not clash)."""

from __future__ import annotations

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "BATCH",
    "DENIALS",
    "LATENCY",
    "MONITORING_UNRECORDED",
    "PREDICTIONS",
    "REGISTRY",
    "REQUESTS",
    "render",
]

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "radgate_serve_requests",
    "Predict requests by model and HTTP status",
    ["model", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "radgate_serve_request_seconds",
    "End-to-end latency of successful predict requests",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
BATCH = Histogram(
    "radgate_serve_batch_size",
    "Size of the forward batch each instance ran in (@serve.batch)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
DENIALS = Counter(
    "radgate_serve_denials", "Refused requests: gate (not approved) or auth", ["reason"], registry=REGISTRY
)
PREDICTIONS = Counter(
    "radgate_serve_predictions",
    "Decisions at the operating point by model and label",
    ["model", "label"],
    registry=REGISTRY,
)
MONITORING_UNRECORDED = Counter(
    "radgate_monitoring_unrecorded",
    "Served images live monitoring did not record: its hand-off backlog was full (overload)",
    ["model"],
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """The ingress's metrics, then the default registry's: drift gauges and feedback counters
    (``serving.monitoring.alerts``) and the process metrics."""
    return generate_latest(REGISTRY) + generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
