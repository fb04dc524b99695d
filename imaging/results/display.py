"""Pixels of a source instance as a radiologist would see them: modality LUT, then window.

The overlay is drawn on this image, so a reviewer sees the same grey levels as in the viewer:
Window Center/Width from the instance (or given), else its VOI LUT, else a 0.5-99.5 percentile
window. MONOCHROME1 is inverted so that bright always means dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi

__all__ = ["DisplayImage", "ResultImageError", "display_image", "linear_window"]


class ResultImageError(ValueError):
    """The source instance has no pixels that can be displayed as a 2D image."""


@dataclass(frozen=True)
class DisplayImage:
    """A 2D frame scaled to [0, 1] (1 = brightest) and how it was windowed."""

    pixels: np.ndarray  # (rows, columns) float32
    window_description: str
    frame: int = 0


def _first(value: object) -> float:
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 linear windowing onto [0, 1]."""
    width = max(float(width), 1.0)
    scaled = (values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _frame(ds: Dataset, frame: int) -> np.ndarray:
    if "PixelData" not in ds:
        raise ResultImageError("the instance has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for undecodable pixel data
        raise ResultImageError(f"cannot decode pixel data: {type(exc).__name__}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise ResultImageError(f"frame {frame} out of range (the instance has {frames})")
        pixels = pixels[frame]
    elif frame != 0:
        raise ResultImageError("the instance has a single frame")
    if samples == 3:
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if pixels.ndim != 2:
        raise ResultImageError(f"expected a 2D frame, got shape {pixels.shape}")
    return np.asarray(pixels)


def display_image(ds: Dataset, frame: int = 0, window: tuple[float, float] | None = None) -> DisplayImage:
    """The frame windowed for display; ``window`` is (center, width) in modality units."""
    raw = _frame(ds, frame)
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    values = raw.astype(np.float32) if colour else apply_modality_lut(raw, ds).astype(np.float32)
    if window is not None:
        pixels = linear_window(values, *window)
        description = f"W {window[1]:g} / C {window[0]:g}"
    elif not colour and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        pixels = linear_window(values, center, width)
        description = f"W {width:g} / C {center:g}"
    elif not colour and "VOILUTSequence" in ds:
        voi = apply_voi(values, ds).astype(np.float32)
        low, high = float(voi.min()), float(voi.max())
        pixels = (voi - low) / max(high - low, 1e-6)
        description = "VOI LUT"
    else:
        low, high = np.percentile(values, [0.5, 99.5])
        pixels = np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0)
        description = "auto window (0.5-99.5 percentile)"
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = 1.0 - pixels
    return DisplayImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32), window_description=description, frame=frame
    )
