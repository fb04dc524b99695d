"""After training: the explanation evidence a registered version carries into review.

``explain_after_training`` runs, on the test split, (1) the parameter-randomisation sanity check
and records it on the run and the model version (``radgate.saliency_sanity``, read by the
approval policy), (2) deletion/insertion faithfulness per method, logged as run metrics, and
(3) the reviewer gallery (TP, FP, FN, TN overlays) logged under the run's ``explain/gallery``.
The training pipeline calls it after registration with the test images it already has in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.explain.core import Explainer, ExplainMethod
from training.explain.faithfulness import FaithfulnessResult, deletion_insertion
from training.explain.gallery import GalleryCase, select_gallery_cases, write_gallery
from training.explain.layers import overlay_method
from training.explain.sanity import SanityConfig, SanityResult, run_randomization_check
from training.explain.tracking import log_faithfulness, log_sanity_result, sanity_threshold_from_policy

__all__ = ["PostTrainingReport", "explain_after_training", "sanity_sample"]


@dataclass(frozen=True)
class PostTrainingReport:
    sanity: SanityResult
    faithfulness: tuple[FaithfulnessResult, ...]
    gallery: tuple[GalleryCase, ...] = field(default_factory=tuple)


def sanity_sample(positive_scores: Sequence[float], count: int, threshold: float = 0.5) -> list[int]:
    """Indices for the sanity check: predicted positives first (the maps reviewers will see),
    most confident first, then the rest; deterministic."""
    scores = np.asarray(positive_scores, dtype=float)
    order = np.lexsort((np.arange(len(scores)), -scores))
    positives = [int(i) for i in order if scores[i] >= threshold]
    others = [int(i) for i in order if scores[i] < threshold]
    return (positives + others)[:count]


def explain_after_training(
    network: nn.Module,
    test_images: torch.Tensor,
    test_labels: Sequence[int],
    positive_scores: Sequence[float],
    *,
    run_id: str,
    model_name: str | None = None,
    model_version: str | None = None,
    label_names: Sequence[str] = (),
    gradcam_layer: str | None = None,
    threshold: float = 0.5,
    positive_index: int = 1,
    sanity_images: int = 8,
    faithfulness_images: int = 16,
    gallery_per_outcome: int = 2,
    methods: Sequence[ExplainMethod | str] | None = None,
    sanity_config: SanityConfig | None = None,
    tracking_uri: str | None = None,
) -> PostTrainingReport:
    """Sanity check, faithfulness and gallery for a trained ``network`` (see module docstring).

    ``test_images`` are preprocessed (N, C, H, W); ``positive_scores`` the model's probability of
    the positive class for each. The sanity threshold is the policy's, when it sets one.
    ``methods`` (faithfulness) default to the family's overlay method, Grad-CAM and Saliency; the
    gallery shows the overlay method.
    """
    if not (len(test_images) == len(test_labels) == len(positive_scores)):
        raise ValueError("test_images, test_labels and positive_scores must have the same length")
    from training.explain.settings import load_explain_settings

    settings = load_explain_settings()
    config = settings.explain.model_copy(
        update={"target_layer": gradcam_layer or settings.explain.target_layer}
    )
    sanity_config = sanity_config or settings.sanity
    policy_limit = sanity_threshold_from_policy(model_name) if model_name else None
    chosen = sanity_sample(positive_scores, sanity_images, threshold)
    sanity = run_randomization_check(
        network, test_images[chosen], config=sanity_config, explain_config=config, threshold=policy_limit
    )
    log_sanity_result(
        sanity, run_id=run_id, model_name=model_name, model_version=model_version, tracking_uri=tracking_uri
    )

    overlay = ExplainMethod(overlay_method(network))
    if methods is None:
        methods = list(dict.fromkeys((overlay, ExplainMethod.GRADCAM, ExplainMethod.SALIENCY)))
    explainer = Explainer(network, config=config, label_names=label_names)
    subset = test_images[: max(1, faithfulness_images)]
    faithfulness = tuple(
        deletion_insertion(network, subset, explainer.explain(subset, method, positive_index))
        for method in methods
    )
    log_faithfulness(list(faithfulness), run_id=run_id, tracking_uri=tracking_uri)

    cases = select_gallery_cases(
        test_labels, positive_scores, threshold=threshold, per_outcome=gallery_per_outcome
    )
    with tempfile.TemporaryDirectory() as folder:
        gallery = write_gallery(
            explainer,
            test_images,
            cases,
            Path(folder),
            model_name=model_name or "model",
            model_version=model_version or "unregistered",
            positive_index=positive_index,
            method=overlay,
            run_id=run_id,
            tracking_uri=tracking_uri,
        )
    return PostTrainingReport(sanity=sanity, faithfulness=faithfulness, gallery=tuple(gallery))
