"""Explain one DICOM instance end to end: the call serving, the CLI and the web UI share.

``explain_registered(loaded, dicom, method=...)`` preprocesses the instance exactly as the model
was trained (``LoadedModel.preprocess``), explains it, and builds every result a reviewer or a
PACS needs: the overlay PNG (bytes), the DICOM Secondary Capture (highdicom dataset), the
clinician summary and a JSON-able record. ``CaseExplanation.write(out_dir)`` saves them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydicom import dcmread
from pydicom.dataset import Dataset
from torch import nn

from governance.tags import Tag
from training.explain.core import ExplainConfig, Explainer, ExplainError, ExplainMethod, Explanation
from training.explain.summary import AttributionFocus, attribution_focus, clinician_summary

__all__ = ["CaseExplanation", "RegisteredModel", "approval_status", "explain_instance", "explain_registered"]


class RegisteredModel(Protocol):
    """What :func:`explain_registered` needs of ``training.registry.LoadedModel``."""

    module: nn.Module
    name: str
    version: str
    label_names: tuple[str, ...]
    gradcam_layer: str
    tags: dict[str, str]

    @property
    def positive_index(self) -> int: ...

    def preprocess(self, source: Path | str | bytes) -> torch.Tensor: ...


@dataclass(frozen=True)
class CaseExplanation:
    """Everything produced for one explained instance (no patient data outside the DICOM)."""

    explanation: Explanation
    model_name: str
    model_version: str
    finding: str
    probability: float
    approval: str
    summary: str
    focus: AttributionFocus | None
    png: bytes
    secondary_capture: Dataset
    structured_report: Dataset | None = None
    sanity: str | None = None

    @property
    def method(self) -> ExplainMethod:
        return self.explanation.method

    @property
    def attribution(self) -> np.ndarray:
        """The map at model input size, [0, 1]."""
        return self.explanation.maps[0]

    def record(self) -> dict[str, Any]:
        """JSON-able result (what serving returns and the CLI writes as ``result.json``)."""
        return {
            "model": {"name": self.model_name, "version": self.model_version, "approval": self.approval},
            "method": self.method.value,
            "target_layer": self.explanation.target_layer,
            "finding": self.finding,
            "target_index": self.explanation.targets[0],
            "probability": round(self.probability, 6),
            "probabilities": [round(float(p), 6) for p in self.explanation.probabilities[0]],
            "focus": None
            if self.focus is None
            else {
                "image_region": self.focus.image_region,
                "patient_region": self.focus.patient_region,
                "centroid": list(self.focus.centroid),
                "extent": round(self.focus.extent, 4),
                "spread": self.focus.spread,
            },
            "saliency_sanity": self.sanity,
            "summary": self.summary,
            "secondary_capture": {
                "sop_class_uid": str(self.secondary_capture.SOPClassUID),
                "series_description": str(self.secondary_capture.SeriesDescription),
            },
            "structured_report": None
            if self.structured_report is None
            else {"sop_class_uid": str(self.structured_report.SOPClassUID)},
        }

    def write(self, out_dir: Path | str) -> dict[str, Path]:
        """``<method>-overlay.png``, ``<method>-overlay.dcm`` (SC), ``<method>-result-sr.dcm``,
        ``<method>-result.json``."""
        from imaging.results import write_secondary_capture

        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.method.value}-overlay"
        png = folder / f"{stem}.png"
        png.write_bytes(self.png)
        written = {
            "png": png,
            "dicom": write_secondary_capture(self.secondary_capture, folder / f"{stem}.dcm"),
        }
        if self.structured_report is not None:
            sr_path = folder / f"{self.method.value}-result-sr.dcm"
            written["sr"] = write_secondary_capture(self.structured_report, sr_path)
        record = folder / f"{self.method.value}-result.json"
        record.write_text(json.dumps(self.record(), indent=2, sort_keys=True))
        written["json"] = record
        return written


def approval_status(tags: dict[str, str]) -> str:
    """The version's review status as registration and governance tag it."""
    return tags.get(Tag.STATUS, "unknown")


def explain_instance(
    model: nn.Module,
    source: Dataset,
    inputs: torch.Tensor,
    *,
    model_name: str,
    model_version: str,
    label_names: tuple[str, ...] = (),
    method: ExplainMethod | str = ExplainMethod.GRADCAM,
    target: int | None = None,
    approval: str = "unknown",
    sanity: str | None = None,
    config: ExplainConfig | None = None,
    frame: int = 0,
    probability: float | None = None,
    positive: bool | None = None,
    calibration: str | None = None,
    model_approval: Any = None,
) -> CaseExplanation:
    """Explain ``inputs`` (1, C, H, W; preprocessed from ``source``) and build the results.

    ``probability`` (the served, calibrated probability of the explained class), ``positive``
    (the decision at the operating threshold) and ``calibration`` (how the probability was
    calibrated) replace the explainer's own softmax in the summary, overlay caption and SR.
    ``model_approval`` (:class:`imaging.results.ModelApproval`) puts the registry's approval into
    the SR; the SR also outlines where the map concentrates (its attention region)."""
    from imaging.results import (
        AlgorithmIdentity,
        OverlayCaption,
        attention_region,
        blend_overlay,
        build_overlay_secondary_capture,
        build_result_report,
        display_image,
        patient_orientation_of,
        render_overlay_png,
        resize_map,
    )

    if inputs.dim() != 4 or len(inputs) != 1:
        raise ExplainError(f"expected one preprocessed 2D image (1, C, H, W), got {tuple(inputs.shape)}")
    explainer = Explainer(model, config=config, label_names=label_names)
    explanation = explainer.explain(inputs, method, target)
    shown = display_image(source, frame=frame)
    heat = resize_map(explanation.maps[0], (int(shown.pixels.shape[0]), int(shown.pixels.shape[1])))
    finding = explanation.target_label(0)
    if probability is None:
        probability = explanation.target_probability(0)
    focus = attribution_focus(heat, patient_orientation_of(source))
    title = explanation.method.display_name
    summary = clinician_summary(
        finding=finding,
        probability=probability,
        method=title,
        model_name=model_name,
        model_version=model_version,
        focus=focus,
        approval=approval,
    )
    caption = OverlayCaption(
        model_name=model_name,
        model_version=model_version,
        method=title,
        finding=finding,
        probability=probability,
        approval=approval,
        window=shown.window_description,
    )
    png = render_overlay_png(shown.pixels, heat, caption)
    rgb = blend_overlay(shown.pixels, heat)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    secondary = build_overlay_secondary_capture(
        source,
        rgb,
        AlgorithmIdentity(name=model_name, version=model_version, method=title),
        frame=frame + 1 if frames > 1 else None,
        comments=summary,
    )
    algorithm = AlgorithmIdentity(name=model_name, version=model_version, method=title)
    report = build_result_report(
        source,
        algorithm,
        finding=finding,
        probability=probability,
        series_number=int(secondary.SeriesNumber) + 1,
        positive=positive,
        calibration=calibration,
        approval=model_approval,
        region=attention_region(heat),
    )
    return CaseExplanation(
        explanation=explanation,
        model_name=model_name,
        model_version=model_version,
        finding=finding,
        probability=probability,
        approval=approval,
        summary=summary,
        focus=focus,
        png=png,
        secondary_capture=secondary,
        structured_report=report,
        sanity=sanity,
    )


def explain_registered(
    loaded: RegisteredModel,
    dicom: Path | str | bytes,
    *,
    method: ExplainMethod | str | None = None,
    target: str | int | None = None,
    config: ExplainConfig | None = None,
) -> CaseExplanation:
    """Explain one DICOM (path or bytes) with a registered model.

    ``target`` is a label name or index; by default the positive class of a binary model (the
    finding, whatever the prediction), else the predicted class. ``method`` None: the network
    family's overlay method. Grad-CAM uses the layer recorded with the model unless ``config``
    names one.
    """
    from training.explain.layers import overlay_method

    method = method or overlay_method(loaded.module)
    source = dcmread(BytesIO(dicom) if isinstance(dicom, bytes) else dicom)
    inputs = loaded.preprocess(dicom)
    labels = tuple(loaded.label_names)
    index: int | None
    if target is None:
        index = loaded.positive_index if len(labels) == 2 else None
    elif isinstance(target, int) or str(target).isdigit():
        index = int(target)
    elif target in labels:
        index = labels.index(str(target))
    else:
        raise ExplainError(f"unknown label {target!r}; the model's labels are {', '.join(labels)}")
    config = config or ExplainConfig()
    if config.target_layer is None and loaded.gradcam_layer:
        config = config.model_copy(update={"target_layer": loaded.gradcam_layer})
    return explain_instance(
        loaded.module,
        source,
        inputs,
        model_name=loaded.name,
        model_version=str(loaded.version),
        label_names=labels,
        method=method,
        target=index,
        approval=approval_status(loaded.tags),
        sanity=loaded.tags.get(Tag.SALIENCY_SANITY),
        config=config,
    )
