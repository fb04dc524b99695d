"""Reviewer gallery: overlays of chosen test cases (TP, FP, FN, TN) logged with the model run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from training.explain.core import Explainer, ExplainMethod

__all__ = ["GalleryCase", "Outcome", "select_gallery_cases", "write_gallery"]


class Outcome(StrEnum):
    TRUE_POSITIVE = "true_positive"
    FALSE_POSITIVE = "false_positive"
    FALSE_NEGATIVE = "false_negative"
    TRUE_NEGATIVE = "true_negative"


@dataclass(frozen=True)
class GalleryCase:
    index: int  # position in the test split
    outcome: Outcome
    probability: float  # of the positive class
    png: str | None = None  # file name inside the gallery folder


def select_gallery_cases(
    labels: Sequence[int],
    positive_probabilities: Sequence[float],
    *,
    threshold: float = 0.5,
    per_outcome: int = 2,
) -> list[GalleryCase]:
    """Up to ``per_outcome`` cases of each outcome, the most confident first (deterministic:
    ties broken by index). False positives and negatives are the ones reviewers most need."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(positive_probabilities, dtype=float)
    predicted = p >= threshold
    groups = {
        Outcome.TRUE_POSITIVE: (y == 1) & predicted,
        Outcome.FALSE_POSITIVE: (y == 0) & predicted,
        Outcome.FALSE_NEGATIVE: (y == 1) & ~predicted,
        Outcome.TRUE_NEGATIVE: (y == 0) & ~predicted,
    }
    cases: list[GalleryCase] = []
    for outcome, mask in groups.items():
        indices = np.flatnonzero(mask)
        confidence = np.abs(p[indices] - threshold)
        order = indices[np.lexsort((indices, -confidence))]
        cases.extend(GalleryCase(int(i), outcome, float(p[i])) for i in order[:per_outcome])
    return cases


def write_gallery(
    explainer: Explainer,
    images: torch.Tensor,
    cases: Sequence[GalleryCase],
    out_dir: Path,
    *,
    model_name: str,
    model_version: str,
    positive_index: int = 1,
    method: ExplainMethod | str = ExplainMethod.GRADCAM,
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> list[GalleryCase]:
    """Overlay PNGs (positive class explained) plus ``gallery.json`` under ``out_dir``; logged
    to the run's ``explain/gallery`` artifacts when ``run_id`` is given. ``images`` are the
    preprocessed test images ([0, 1], as the model sees them), shown as they are."""
    from imaging.results import OverlayCaption, write_overlay_png

    method = ExplainMethod(method)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[GalleryCase] = []
    if cases:
        batch = images[[c.index for c in cases]]
        explanation = explainer.explain(batch, method, positive_index)
        for row, case in enumerate(cases):
            name = f"{row:02d}-{case.outcome.value}-{method.value}.png"
            caption = OverlayCaption(
                model_name=model_name,
                model_version=model_version,
                method=method.display_name,
                finding=f"{explanation.target_label(row)} ({case.outcome.value.replace('_', ' ')})",
                probability=explanation.target_probability(row),
            )
            image = batch[row, 0].detach().cpu().numpy()
            write_overlay_png(out_dir / name, image, explanation.maps[row], caption)
            written.append(GalleryCase(case.index, case.outcome, case.probability, name))
    (out_dir / "gallery.json").write_text(
        json.dumps([{**c.__dict__, "outcome": c.outcome.value} for c in written], indent=2)
    )
    if run_id:
        from mlflow.tracking import MlflowClient

        if tracking_uri is None:
            from governance.settings import get_settings

            tracking_uri = get_settings().resolved_mlflow_uri
        MlflowClient(tracking_uri).log_artifacts(run_id, str(out_dir), artifact_path="explain/gallery")
    return written
