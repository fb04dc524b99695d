"""Thresholds of the data-quality report and the compliance check (``configs/compliance/thresholds.yaml``).

``RADGATE_COMPLIANCE_CONFIG`` names another file; a ``compliance.yaml`` in ``RADGATE_HOME``
takes precedence over the repository's example. Validated with pydantic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from governance.settings import get_settings
from governance.strict import StrictModel

__all__ = [
    "CONFIG_ENV",
    "ComplianceConfigError",
    "ComplianceThresholds",
    "QualityThresholds",
    "Thresholds",
    "load_thresholds",
]

CONFIG_ENV = "RADGATE_COMPLIANCE_CONFIG"


class ComplianceConfigError(ValueError):
    """The thresholds file is missing or invalid."""


class QualityThresholds(StrictModel):
    min_label_fraction: float = Field(0.2, ge=0, le=1)
    min_subgroup_count: int = Field(5, ge=0)
    max_subgroup_prevalence_gap: float = Field(0.25, ge=0, le=1)
    max_split_subgroup_shift: float = Field(0.25, ge=0, le=1)
    near_duplicate_distance: int = Field(6, ge=0, le=64)
    near_duplicate_min_correlation: float = Field(0.995, ge=0, le=1)
    max_duplicates_within_split: int = Field(0, ge=0)
    max_duplicates_across_splits: int = Field(0, ge=0)
    size_outlier_mads: float = Field(5.0, gt=0)
    consistent_attributes: list[str] = Field(
        default_factory=lambda: ["modality", "photometric", "bits_stored", "pixel_spacing"]
    )
    max_unreadable: int = Field(0, ge=0)


class ComplianceThresholds(StrictModel):
    sample_size: int = Field(200, ge=0)
    max_key_age_days: int = Field(730, ge=1)
    approval_expiry_warning_days: int = Field(30, ge=0)
    token_unused_days: int = Field(90, ge=1)
    max_admins: int = Field(2, ge=1)
    max_anchor_age_days: int = Field(7, ge=1)
    max_quarantine_age_days: int = Field(90, ge=1)
    require_mlflow_anchor: bool = False


class Thresholds(StrictModel):
    version: Literal[1] = 1
    quality: QualityThresholds = Field(default_factory=QualityThresholds)  # type: ignore[arg-type]
    compliance: ComplianceThresholds = Field(default_factory=ComplianceThresholds)  # type: ignore[arg-type]


def _default_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    home = get_settings().home / "compliance.yaml"
    if home.exists():
        return home
    return Path(__file__).resolve().parents[2] / "configs" / "compliance" / "thresholds.yaml"


def load_thresholds(path: Path | None = None) -> Thresholds:
    """The thresholds from ``path`` (or the default file); built-in defaults if none exists."""
    path = path or _default_path()
    if not path.exists():
        if path == Path(__file__).resolve().parents[2] / "configs" / "compliance" / "thresholds.yaml":
            return Thresholds()
        raise ComplianceConfigError(f"thresholds file {path} not found")
    try:
        return Thresholds.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ComplianceConfigError(f"invalid thresholds file {path}: {exc}") from exc
