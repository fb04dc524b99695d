"""Deletion / insertion curves (Petsiuk et al., RISE, 2018): is the map faithful to the model?

Deletion replaces the most attributed pixels first by the image's mean intensity (a flat value
that carries no structure, as Petsiuk et al.'s constant) and follows the explained class's
probability down (lower area is better); insertion starts from a strongly blurred copy and reveals
the most attributed pixels first (higher area is better). Deleting into the blurred copy instead
would leave a large bright finding in place as a blurred blob the model still recognises, so the
curve stayed flat for exactly the clearest findings. Each image's curve is one batched forward
pass of ``steps + 1`` perturbed copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.explain.core import Explanation, probabilities_from_logits

__all__ = ["FaithfulnessResult", "blurred_baseline", "deletion_insertion"]


@dataclass(frozen=True)
class FaithfulnessResult:
    method: str
    deletion_auc: float  # mean over images; lower is better
    insertion_auc: float  # mean over images; higher is better
    deletion_per_image: tuple[float, ...]
    insertion_per_image: tuple[float, ...]

    @property
    def gap(self) -> float:
        """Insertion minus deletion area: > 0 when the map ranks pixels the model relies on."""
        return self.insertion_auc - self.deletion_auc

    def metrics(self, prefix: str = "faithfulness") -> dict[str, float]:
        return {
            f"{prefix}_deletion_auc_{self.method}": self.deletion_auc,
            f"{prefix}_insertion_auc_{self.method}": self.insertion_auc,
            f"{prefix}_gap_{self.method}": self.gap,
        }


def blurred_baseline(inputs: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """A strongly blurred copy: down-sample by ``factor``, then back (bi/trilinear)."""
    spatial = inputs.shape[2:]
    small = [max(1, s // factor) for s in spatial]
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    reduced = F.interpolate(inputs, size=small, mode="area")
    return F.interpolate(reduced, size=tuple(spatial), mode=mode, align_corners=False)


def _auc(values: np.ndarray) -> float:
    fractions = np.linspace(0.0, 1.0, len(values))
    return float(np.sum((values[1:] + values[:-1]) * np.diff(fractions)) / 2.0)


@torch.no_grad()
def deletion_insertion(
    model: nn.Module, inputs: torch.Tensor, explanation: Explanation, *, steps: int = 16
) -> FaithfulnessResult:
    """Deletion and insertion areas for ``explanation`` of ``inputs`` (same batch, same order)."""
    if len(inputs) != len(explanation):
        raise ValueError(f"{len(inputs)} inputs for {len(explanation)} maps")
    was_training = model.training
    model.eval()
    parameter = next(model.parameters(), None)
    if parameter is not None:
        inputs = inputs.to(parameter.device)
    baseline = blurred_baseline(inputs.float())
    spatial = tuple(range(2, inputs.dim()))
    flat = inputs.float().mean(dim=spatial, keepdim=True).expand_as(inputs)
    fractions = torch.linspace(0.0, 1.0, steps + 1)
    deletion: list[float] = []
    insertion: list[float] = []
    try:
        for index in range(len(inputs)):
            image, blurred, constant = inputs[index].float(), baseline[index], flat[index]
            scores = torch.as_tensor(explanation.maps[index]).flatten()
            # Stable ranks: ties (flat regions) resolved by position, so curves are deterministic.
            order = torch.argsort(scores, descending=True, stable=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order))
            cut = (fractions * len(order)).round().long()
            masks = (
                (rank[None, :] < cut[:, None]).view(steps + 1, 1, *image.shape[1:]).float().to(image.device)
            )
            deleted = image[None] * (1 - masks) + constant[None] * masks
            inserted = blurred[None] * (1 - masks) + image[None] * masks
            batch = torch.cat([deleted, inserted])
            probabilities = probabilities_from_logits(model(batch))
            column = 0 if probabilities.shape[1] == 1 else explanation.targets[index]
            curve = probabilities[:, column].cpu().numpy()
            deletion.append(_auc(curve[: steps + 1]))
            insertion.append(_auc(curve[steps + 1 :]))
    finally:
        model.train(was_training)
    return FaithfulnessResult(
        method=explanation.method.value,
        deletion_auc=float(np.mean(deletion)),
        insertion_auc=float(np.mean(insertion)),
        deletion_per_image=tuple(deletion),
        insertion_per_image=tuple(insertion),
    )
