"""The explanation methods a prediction request may name (``explain=``): one home for the
request vocabulary, imported by the routes, the worker and the model without import cycles."""

from __future__ import annotations

__all__ = ["EXPLAIN_METHODS", "OVERLAY"]

#: ``explain=overlay``: the attribution method this model's network family shows its reviewers
#: and checks as evidence (``training.explain.layers.overlay_method``), whatever it is.
OVERLAY = "overlay"
#: What a classification request may ask for (``none``: no explanation).
EXPLAIN_METHODS = (OVERLAY, "gradcam", "hirescam", "saliency", "ig", "occlusion")
