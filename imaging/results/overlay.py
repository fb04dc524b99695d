"""Blend an attribution map onto a windowed grey image (RGB, 8 bit)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["Colormap", "OverlayCaption", "OverlayError", "blend_overlay", "resize_map"]


class OverlayError(ValueError):
    """Map and image cannot be combined (shape, range)."""


class Colormap(StrEnum):
    """Perceptually ordered maps (matplotlib names); ``jet`` kept for reviewers used to it."""

    INFERNO = "inferno"
    MAGMA = "magma"
    VIRIDIS = "viridis"
    TURBO = "turbo"
    JET = "jet"


@dataclass(frozen=True)
class OverlayCaption:
    """What the overlay must say about its origin (no patient data)."""

    model_name: str
    model_version: str
    method: str
    finding: str | None = None
    probability: float | None = None
    approval: str | None = None
    window: str | None = None

    @property
    def model(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    def lines(self) -> list[str]:
        first = f"{self.model} | {self.method}"
        if self.approval:
            first += f" | approval: {self.approval}"
        second = []
        if self.finding is not None:
            second.append(f"explains: {self.finding}")
        if self.probability is not None:
            second.append(f"p = {self.probability:.3f}")
        if self.window:
            second.append(f"window: {self.window}")
        return [first, " | ".join(second)] if second else [first]


def resize_map(attribution: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [0, 1] map to ``shape`` (rows, columns)."""
    if attribution.ndim != 2:
        raise OverlayError(f"expected a 2D map, got shape {attribution.shape}")
    if attribution.shape == shape:
        return attribution.astype(np.float32)
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(attribution, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)
    return resized[0, 0].clamp(0.0, 1.0).numpy()


def blend_overlay(
    image: np.ndarray,
    attribution: np.ndarray,
    *,
    colormap: Colormap | str = Colormap.JET,
    max_alpha: float = 0.5,
    threshold: float = 0.2,
) -> np.ndarray:
    """RGB uint8 (rows, columns, 3): the grey image, coloured where the map exceeds ``threshold``.

    Opacity grows with the map value (from 30 % to 100 % of ``max_alpha``) so that the anatomy stays readable
    under the hottest region; values below ``threshold`` are left uncoloured.
    """
    from matplotlib import colormaps

    if image.ndim != 2:
        raise OverlayError(f"expected a 2D image, got shape {image.shape}")
    if not 0.0 <= max_alpha <= 1.0 or not 0.0 <= threshold < 1.0:
        raise OverlayError("max_alpha must be in [0, 1] and threshold in [0, 1)")
    heat = resize_map(attribution, (int(image.shape[0]), int(image.shape[1])))
    grey = np.clip(image.astype(np.float32), 0.0, 1.0)
    colours = colormaps[Colormap(colormap).value](heat)[..., :3].astype(np.float32)
    ramp = 0.3 + 0.7 * (heat - threshold) / (1.0 - threshold)
    alpha = np.where(heat >= threshold, max_alpha * ramp, 0.0)
    alpha = alpha.astype(np.float32)[..., None]
    rgb = (1.0 - alpha) * grey[..., None] + alpha * colours
    return np.round(rgb * 255.0).clip(0, 255).astype(np.uint8)
