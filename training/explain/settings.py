"""YAML settings of the explanation package (``configs/explain/default.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from governance.strict import StrictModel
from training.explain.core import ExplainConfig
from training.explain.sanity import SanityConfig

__all__ = ["ExplainSettings", "ExplainSettingsError", "default_settings_path", "load_explain_settings"]


class ExplainSettingsError(ValueError):
    """The settings file cannot be read or does not validate."""


class ExplainSettings(StrictModel):
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    sanity: SanityConfig = Field(default_factory=SanityConfig)


def default_settings_path() -> Path:
    return Path(__file__).resolve().parents[2] / "configs" / "explain" / "default.yaml"


def load_explain_settings(path: Path | None = None) -> ExplainSettings:
    """``path``, else the repository default when present, else built-in defaults."""
    chosen = path or default_settings_path()
    if path is None and not chosen.exists():
        return ExplainSettings()
    try:
        raw = yaml.safe_load(chosen.read_text()) or {}
    except OSError as exc:
        raise ExplainSettingsError(f"cannot read {chosen}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ExplainSettingsError(f"{chosen} is not valid YAML") from exc
    try:
        return ExplainSettings.model_validate(raw)
    except ValidationError as exc:
        raise ExplainSettingsError(f"invalid explain settings {chosen}: {exc}") from exc
