"""The one pydantic base for RadGate's configuration and manifests: unknown keys are errors
(a misspelt YAML key must not be silently ignored) and instances are immutable once validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """``extra="forbid"``, ``frozen=True``; field names may start with ``model_`` (``model_name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
