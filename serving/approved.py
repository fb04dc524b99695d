"""Loading a model outside the request path (monitoring, retraining) only as the gate allows.

Serving's replicas load through :func:`serving.model.load_gated`; the monitor and retrain
commands used to call ``training.registry.load_model`` directly, so a revoked or never
approved version could be replayed or retrained from. :func:`load_approved` asks the gate
first (fresh decision), loads the version it names with the artifact hash checked, and
refuses when the loaded artifact is not the one the gate approved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governance.approvals import Gate
    from training.registry import LoadedModel

__all__ = ["NotApproved", "load_approved"]


class NotApproved(LookupError):
    """The gate does not allow this model (or its artifact changed since the decision)."""


def load_approved(ref: str, *, tracking_uri: str | None = None, gate: Gate | None = None) -> LoadedModel:
    """``NAME@ALIAS`` or ``NAME/VERSION``, loaded only if the gate allows it now."""
    from governance.approvals import default_gate
    from training.registry import load_model, parse_model_ref

    name, alias, version = parse_model_ref(ref)
    decision = (gate or default_gate())(name, alias, version=version, fresh=True)
    if not decision.allowed or decision.version is None:
        raise NotApproved(f"{ref} is not approved: " + "; ".join(decision.reasons[:3]))
    loaded = load_model(f"{name}/{decision.version}", tracking_uri=tracking_uri, verify=True)
    if decision.artifact_sha256 is not None and loaded.artifact_sha256 != decision.artifact_sha256:
        raise NotApproved(f"{ref}: the artifact changed after the gate's decision")
    return loaded
