"""Monitoring settings (``configs/monitoring/default.yaml``, pydantic-validated)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator

from governance.strict import StrictModel

__all__ = [
    "CONFIG_ENV",
    "AlertSettings",
    "Correction",
    "DriftSettings",
    "FeedbackSettings",
    "MonitoringConfig",
    "MonitoringConfigError",
    "load_monitoring_config",
    "parse_window",
]

CONFIG_ENV = "RADGATE_MONITORING_CONFIG"
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class MonitoringConfigError(ValueError):
    """The monitoring config cannot be read or is invalid."""


class Correction(StrEnum):
    BH = "bh"  # Benjamini-Hochberg (false discovery rate)
    HOLM = "holm"  # Holm-Bonferroni (family-wise error rate)


def parse_window(text: str) -> timedelta:
    """``30m``, ``6h``, ``1d``, ``2w`` -> timedelta."""
    match = _WINDOW.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise MonitoringConfigError(f"window {text!r} is not a positive duration such as 6h, 1d or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class MinEffect(StrictModel):
    ks: float = Field(default=0.15, ge=0, le=1)
    psi: float = Field(default=0.2, ge=0)
    mmd: float = Field(default=0.02, ge=0)


class DriftSettings(StrictModel):
    window: str = "1d"
    min_samples: int = Field(default=30, ge=2)
    correction: Correction = Correction.BH
    alpha: float = Field(default=0.01, gt=0, lt=1)
    min_effect: MinEffect = MinEffect()
    permutations: int = Field(default=2000, ge=20)
    max_mmd_samples: int = Field(default=300, ge=10)
    seed: int = 0

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_window(value)
        return value


class AlertSettings(StrictModel):
    min_drifted_features: int = Field(default=1, ge=1)
    webhook_url: str | None = None
    webhook_secret_env: str = "RADGATE_MONITORING_WEBHOOK_SECRET"
    webhook_timeout_s: float = Field(default=5, gt=0)


class FeedbackSettings(StrictModel):
    keep_inputs: bool = True
    pending_input_hours: float = Field(default=72, gt=0)
    deid_profile: str = "research"


class MonitoringConfig(StrictModel):
    version: int = 1
    drift: DriftSettings = DriftSettings()
    alerts: AlertSettings = AlertSettings()
    feedback: FeedbackSettings = FeedbackSettings()


def default_config_path() -> Path | None:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    shipped = Path(__file__).resolve().parents[2] / "configs" / "monitoring" / "default.yaml"
    return shipped if shipped.exists() else None


def load_monitoring_config(path: Path | None = None) -> MonitoringConfig:
    """The config at ``path``, else ``$RADGATE_MONITORING_CONFIG``, else the shipped default."""
    path = path or default_config_path()
    if path is None:
        return MonitoringConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return MonitoringConfig.model_validate(data)
    except OSError as exc:
        raise MonitoringConfigError(f"cannot read monitoring config {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise MonitoringConfigError(f"invalid monitoring config {path}: {exc}") from exc
