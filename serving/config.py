"""Serving configuration (``configs/serve/*.yaml``), validated with pydantic.

One :class:`ServeConfig` describes the HTTP ingress (address, body limit, gate cache) and one
:class:`ServedModel` per model: the registry reference (alias or pinned version), the backend
(in-process torch or Triton), Ray resources, autoscaling and dynamic batching, and optionally a
PACS to push results back to.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from governance.strict import StrictModel
from governance.tls import ClientTls, ServerTls
from imaging.gateway.config import PacsPeer
from serving.interop import AtnaExportConfig, FhirConfig
from serving.interop.ups import UpsConfig

__all__ = [
    "DEFAULT_CONFIG",
    "AutoscalingConfig",
    "Backend",
    "DriftSchedule",
    "ServeConfig",
    "ServeConfigError",
    "ServedModel",
    "load_serve_config",
]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve" / "default.yaml"


class ServeConfigError(ValueError):
    """The serving configuration is missing or invalid."""


class Backend(StrEnum):
    """Where the forward pass runs."""

    INPROCESS = "inprocess"  # torch in the Ray Serve replica
    TRITON = "triton"  # NVIDIA Triton over gRPC (tritonclient)


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling (replicas follow the number of ongoing requests)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=4.0, gt=0)

    def to_ray(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


class ServedModel(StrictModel):
    """One served model: a deployment of its own."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    alias: str | None = "production"
    version: str | None = Field(default=None, pattern=r"^\d+$")
    backend: Backend = Backend.INPROCESS
    triton_url: str = "127.0.0.1:8001"  # gRPC
    # gRPC over TLS to Triton (its CA; this side's certificate when Triton asks for one): needed
    # wherever Triton is not on the same host or pod.
    triton_tls: ClientTls | None = None
    triton_model_name: str | None = None  # defaults to ``name``
    # The repository `radgate triton publish` wrote (read-only here): when set, serving loads the
    # model into Triton (explicit model control) from bytes verified against the publication
    # record, and re-verifies them before forward passes (serving.triton.publish.TritonLoader).
    triton_repository: str | None = None
    num_replicas: int = Field(default=1, ge=1)
    autoscaling: AutoscalingConfig | None = None
    # Run the model inside the ingress replica (one actor hop less per request). Default (None):
    # colocated when the model is one replica on CPU without autoscaling; false: a deployment
    # of its own (replicas, autoscaling, GPUs).
    colocate: bool | None = None
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    torch_threads: int | None = Field(default=None, ge=1)  # default: the replica's CPUs
    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.01, ge=0, le=1)
    max_ongoing_requests: int = Field(default=32, ge=1)
    explain_default: str = "none"  # explanation method when the request names none

    @model_validator(mode="before")
    @classmethod
    def _pinned_version_drops_default_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("version") is not None and "alias" not in data:
            return {**data, "alias": None}
        return data

    @model_validator(mode="after")
    def _one_reference(self) -> ServedModel:
        if (self.alias is None) == (self.version is None):
            raise ValueError(f"model {self.name!r}: give exactly one of alias or version")
        if self.colocate and not self._colocatable:
            raise ValueError(
                f"model {self.name!r}: colocate needs one replica on CPU without autoscaling"
                " (set colocate: false for a deployment of its own)"
            )
        return self

    @property
    def _colocatable(self) -> bool:
        return self.num_replicas == 1 and self.autoscaling is None and self.num_gpus == 0

    @property
    def colocated(self) -> bool:
        """Whether the model runs in the ingress replica rather than a deployment of its own."""
        return self._colocatable if self.colocate is None else self.colocate

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus))


class DriftSchedule(StrictModel):
    """Drift checks the ingress runs periodically (``radgate serve``); alerts are audited, set the
    ``radgate_drift_*`` gauges on ``/metrics`` and go to the monitoring config's webhook."""

    interval_s: float = Field(default=3600.0, ge=1)
    window: str | None = Field(
        default=None, pattern=r"^\s*[1-9]\d*\s*[smhdw]\s*$"
    )  # default: monitoring config
    models: list[str] | None = None  # default: every served model


class ServeConfig(StrictModel):
    """The whole application."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    route_prefix: str = "/"
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_instances_per_request: int = Field(default=16, ge=1)
    max_series_instances: int = Field(default=1024, ge=1)  # one series for a segmentation model
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_num_cpus: float = Field(default=0.5, ge=0)
    # The ingress replica answers HTTP on ``host:port`` itself (Ray Serve direct ingress) instead
    # of behind Ray Serve's HTTP proxy actor: one process hop and one copy of each body less.
    # Default (None): on with one ingress replica in a Ray that RadGate starts; false: the proxy.
    direct_ingress: bool | None = None
    gate_ttl_s: float = Field(default=5.0, gt=0, le=10)  # revocation takes effect within this
    pacs: PacsPeer | None = None  # results are pushed here when a request asks for it
    calling_ae: str = "RADGATE"
    drift: DriftSchedule | None = None  # periodic drift checks; none when absent
    fhir: FhirConfig | None = None  # FHIR R4 DiagnosticReport per result (EMR); none: off
    atna: AtnaExportConfig | None = None  # audit chain exported as DICOM/ATNA syslog; none: off
    ups: UpsConfig | None = None  # UPS-RS worklist of AI tasks under /ups-rs; none: off
    # HTTPS for the API, the UI and DICOMweb on this port (Ray Serve's proxy terminates TLS;
    # direct ingress has no TLS and is then off). None: plaintext, for loopback only.
    tls: ServerTls | None = None
    models: list[ServedModel] = Field(min_length=1)

    @model_validator(mode="after")
    def _direct_ingress_one_replica(self) -> ServeConfig:
        if self.direct_ingress and self.ingress_replicas != 1:
            raise ValueError("direct_ingress serves one port: it needs ingress_replicas: 1")
        if self.direct_ingress and self.tls is not None:
            raise ValueError("direct_ingress has no TLS: leave it unset with tls")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ServeConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("each served model name may appear once")
        unknown = set(self.drift.models or []) - set(names) if self.drift else set()
        if unknown:
            raise ValueError(f"drift.models names models not served here: {', '.join(sorted(unknown))}")
        return self

    def model(self, name: str) -> ServedModel | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def wants_direct_ingress(self) -> bool:
        """Whether the ingress replica should answer HTTP itself (one replica: one port, no TLS)."""
        if self.tls is not None:
            return False
        return self.ingress_replicas == 1 if self.direct_ingress is None else self.direct_ingress


def load_serve_config(path: Path | str | None = None, **overrides: Any) -> ServeConfig:
    """Read and validate a YAML config (default ``configs/serve/default.yaml``)."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except OSError as exc:
        raise ServeConfigError(f"cannot read serving config {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"serving config {source} is not valid YAML") from exc
    if not isinstance(data, dict):
        raise ServeConfigError(f"serving config {source} must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ServeConfigError(f"invalid serving config {source}:\n{exc}") from exc
