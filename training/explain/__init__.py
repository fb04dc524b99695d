"""Explanations of RadGate models: Captum attributions, sanity checks, faithfulness, summaries.

Entry points: :class:`Explainer` / :func:`explain` (maps for a batch), :func:`explain_registered`
(one DICOM with a registered model -> PNG, Secondary Capture, summary), and
:func:`run_randomization_check` + :func:`log_sanity_result` (the governance check).
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from training.explain.case import CaseExplanation, approval_status, explain_instance, explain_registered
    from training.explain.core import (
        ExplainConfig,
        Explainer,
        ExplainError,
        ExplainMethod,
        Explanation,
        explain,
        probabilities_from_logits,
    )
    from training.explain.faithfulness import FaithfulnessResult, deletion_insertion
    from training.explain.gallery import GalleryCase, Outcome, select_gallery_cases, write_gallery
    from training.explain.layers import NetworkFamily, TargetLayerError, detect_family, resolve_target_layer
    from training.explain.post_training import PostTrainingReport, explain_after_training, sanity_sample
    from training.explain.sanity import (
        SANITY_METRIC,
        SANITY_TAG,
        CascadeStep,
        SanityConfig,
        SanityResult,
        randomize_parameters,
        run_randomization_check,
        spearman,
    )
    from training.explain.settings import ExplainSettings, ExplainSettingsError, load_explain_settings
    from training.explain.summary import AttributionFocus, attribution_focus, clinician_summary
    from training.explain.tracking import log_faithfulness, log_sanity_result, sanity_threshold_from_policy

__all__ = [
    "SANITY_METRIC",
    "SANITY_TAG",
    "AttributionFocus",
    "CascadeStep",
    "CaseExplanation",
    "ExplainConfig",
    "ExplainError",
    "ExplainMethod",
    "ExplainSettings",
    "ExplainSettingsError",
    "Explainer",
    "Explanation",
    "FaithfulnessResult",
    "GalleryCase",
    "NetworkFamily",
    "Outcome",
    "PostTrainingReport",
    "SanityConfig",
    "SanityResult",
    "TargetLayerError",
    "approval_status",
    "attribution_focus",
    "clinician_summary",
    "deletion_insertion",
    "detect_family",
    "explain",
    "explain_after_training",
    "explain_instance",
    "explain_registered",
    "load_explain_settings",
    "log_faithfulness",
    "log_sanity_result",
    "probabilities_from_logits",
    "randomize_parameters",
    "resolve_target_layer",
    "run_randomization_check",
    "sanity_sample",
    "sanity_threshold_from_policy",
    "select_gallery_cases",
    "spearman",
    "write_gallery",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
