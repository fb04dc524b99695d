"""Does the saliency point at the finding? And does it depend on what the model learned?

- **Pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies inside the
  lesion mask dilated by ``tolerance`` pixels; the rate over the positive test images. The
  **saliency mass in the mask** (share of the map's sum inside the undilated mask) is reported
  next to it: a map can peak on the lesion while spreading most of its weight elsewhere.
- **Data (label) randomisation** (Adebayo et al., NeurIPS 2018, section 3.2): the maps of a model
  trained on the real labels are compared with the maps of the same network trained on
  permuted labels (which can only memorise); a method whose maps barely change explains the
  image, not the learned relation. Passes when ``|mean Spearman|`` is at most the threshold.

Masks come from the site (keyed by the original accession number, never in the DICOM); the
caller aligns them with the preprocessed test images (same resize as the model's input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from training.explain.core import ExplainConfig, Explainer, ExplainMethod
from training.explain.sanity import spearman

__all__ = [
    "LABEL_RANDOMIZATION_TAG",
    "LabelRandomizationResult",
    "LocalizationResult",
    "label_randomization_check",
    "log_explanation_evidence",
    "pointing_game",
    "resize_masks",
]

#: Model-version / run tag with the data (label) randomisation outcome ("passed" or "failed").
LABEL_RANDOMIZATION_TAG = "radgate.saliency_label_randomization"


@dataclass(frozen=True)
class LocalizationResult:
    method: str
    images: int
    hits: int
    tolerance_px: int
    mean_mass_in_mask: float
    per_image_hit: tuple[bool, ...]

    @property
    def pointing_game(self) -> float:
        return self.hits / self.images if self.images else float("nan")

    def metrics(self) -> dict[str, float]:
        return {
            "explain_pointing_game": self.pointing_game,
            "explain_saliency_mass_in_mask": self.mean_mass_in_mask,
            "explain_pointing_images": float(self.images),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pointing_game"] = self.pointing_game
        return data


@dataclass(frozen=True)
class LabelRandomizationResult:
    method: str
    images: int
    spearman: float
    spearman_per_image: tuple[float, ...]
    threshold: float

    @property
    def passed(self) -> bool:
        return abs(self.spearman) <= self.threshold

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean masks (N, H, W) resized to the model's input grid as the images were (area
    interpolation, a pixel is lesion when at least a quarter of it is)."""
    tensor = torch.as_tensor(np.asarray(masks, dtype=np.float32))[:, None]
    resized = torch.nn.functional.interpolate(tensor, size=size, mode="area")[:, 0]
    return np.asarray(resized.numpy() >= 0.25)


def pointing_game(
    maps: np.ndarray, masks: np.ndarray, *, tolerance: int = 2, method: str = "gradcam"
) -> LocalizationResult:
    """Hits of the maps' maxima in the dilated masks and the mean saliency mass in the masks."""
    from scipy import ndimage

    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    hits: list[bool] = []
    masses: list[float] = []
    for heat, mask in zip(maps, masks, strict=True):
        mask = np.asarray(mask, dtype=bool)
        grown = ndimage.binary_dilation(mask, iterations=tolerance) if tolerance > 0 else mask
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits.append(bool(grown[peak]))
        total = float(np.asarray(heat, dtype=np.float64).sum())
        masses.append(float(heat[mask].sum()) / total if total > 0 else 0.0)
    return LocalizationResult(
        method=method,
        images=len(hits),
        hits=int(sum(hits)),
        tolerance_px=tolerance,
        mean_mass_in_mask=float(np.mean(masses)) if masses else float("nan"),
        per_image_hit=tuple(hits),
    )


def label_randomization_check(
    trained: nn.Module,
    permuted: nn.Module,
    inputs: torch.Tensor,
    *,
    explain_config: ExplainConfig | None = None,
    method: ExplainMethod = ExplainMethod.GRADCAM,
    target: int = 1,
    threshold: float = 0.5,
) -> LabelRandomizationResult:
    """Spearman of ``trained``'s maps against ``permuted``'s (the same network trained on permuted
    labels) for the explained class ``target`` on preprocessed ``inputs``."""
    first = Explainer(trained, config=explain_config).explain(inputs, method, target).maps
    second = Explainer(permuted, config=explain_config).explain(inputs, method, target).maps
    rhos = tuple(spearman(a, b) for a, b in zip(first, second, strict=True))
    return LabelRandomizationResult(
        method=ExplainMethod(method).value,
        images=len(rhos),
        spearman=float(np.mean(rhos)) if rhos else float("nan"),
        spearman_per_image=rhos,
        threshold=threshold,
    )


def log_explanation_evidence(
    *,
    run_id: str,
    localization: LocalizationResult | None,
    label_randomization: LabelRandomizationResult | None,
    model_name: str | None = None,
    model_version: str | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Run metrics (shown on the reviewer's version page), an ``explain/localization.json``
    artifact, and the label-randomisation outcome as a run and model-version tag."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    document: dict[str, Any] = {}
    if localization is not None:
        for key, value in localization.metrics().items():
            client.log_metric(run_id, key, value)
        document["localization"] = localization.to_dict()
    if label_randomization is not None:
        client.log_metric(run_id, "saliency_label_randomization_spearman", label_randomization.spearman)
        client.set_tag(run_id, LABEL_RANDOMIZATION_TAG, label_randomization.status)
        if model_name and model_version:
            client.set_model_version_tag(
                model_name, model_version, LABEL_RANDOMIZATION_TAG, label_randomization.status
            )
        document["label_randomization"] = label_randomization.to_dict()
    if document:
        client.log_dict(run_id, document, "explain/localization.json")
