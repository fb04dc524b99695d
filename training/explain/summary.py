"""A short, deterministic text per explained case, for clinicians and for the stored result.

Where the attribution concentrates is said in image terms (thirds of the image) and, when the
source carries Patient Orientation or Image Orientation (Patient), in patient terms. Same inputs,
same words: no sampling, numbers rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AttributionFocus", "attribution_focus", "clinician_summary"]

_DIRECTIONS = {
    "L": "left",
    "R": "right",
    "A": "anterior",
    "P": "posterior",
    "H": "superior",
    "F": "inferior",
}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
_HOT = 0.5  # fraction of the map's maximum that counts as "where it concentrates"


@dataclass(frozen=True)
class AttributionFocus:
    """Where a map concentrates: thirds of the image, patient terms, and how spread it is."""

    image_region: str  # e.g. "upper left", "centre"
    patient_region: str | None  # e.g. "patient's right, superior"
    centroid: tuple[float, float]  # (row, column) as fractions of the image
    extent: float  # fraction of pixels at or above half the maximum

    @property
    def spread(self) -> str:
        if self.extent < 0.10:
            return "focal"
        if self.extent < 0.30:
            return "regional"
        return "diffuse"


def _third(fraction: float, names: tuple[str, str, str]) -> str:
    return names[min(2, int(fraction * 3))]


def _patient_side(fraction: float, direction: str) -> str | None:
    """Patient term for a position along an image axis whose increasing direction is ``direction``."""
    letter = direction[:1].upper()
    if letter not in _OPPOSITE or 1 / 3 <= fraction < 2 / 3:
        return None
    toward = letter if fraction >= 2 / 3 else _OPPOSITE[letter]
    word = _DIRECTIONS[toward]
    return f"patient's {word}" if toward in "LR" else word


def attribution_focus(
    attribution: np.ndarray, orientation: tuple[str, str] | None = None
) -> AttributionFocus | None:
    """Focus of a 2D [0, 1] map; ``orientation`` = (row direction, column direction) letters.

    None when the map is flat (nothing stands out).
    """
    heat = np.asarray(attribution, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0 or float(heat.max()) <= 0.0:
        return None
    hot = heat >= _HOT * float(heat.max())
    weights = np.where(hot, heat, 0.0)
    rows, columns = np.indices(heat.shape)
    total = float(weights.sum())
    row = float((rows * weights).sum() / total + 0.5) / heat.shape[0]
    column = float((columns * weights).sum() / total + 0.5) / heat.shape[1]
    vertical = _third(row, ("upper", "middle", "lower"))
    horizontal = _third(column, ("left", "central", "right"))
    if vertical == "middle" and horizontal == "central":
        region = "centre"
    elif vertical == "middle":
        region = f"middle {horizontal}"
    elif horizontal == "central":
        region = f"{vertical} centre"
    else:
        region = f"{vertical} {horizontal}"
    patient: str | None = None
    if orientation is not None:
        # Row direction: where increasing column index points; column direction: increasing row.
        terms = [t for t in (_patient_side(column, orientation[0]), _patient_side(row, orientation[1])) if t]
        patient = ", ".join(terms) if terms else "central"
    return AttributionFocus(
        image_region=region,
        patient_region=patient,
        centroid=(round(row, 3), round(column, 3)),
        extent=float(hot.mean()),
    )


def _percent(fraction: float) -> str:
    return "less than 1%" if fraction < 0.01 else f"about {round(100 * fraction)}%"


def clinician_summary(
    *,
    finding: str,
    probability: float,
    method: str,
    model_name: str,
    model_version: str,
    focus: AttributionFocus | None,
    approval: str | None = None,
) -> str:
    """Three sentences: finding and probability with model and approval; where the map
    concentrates; what an attribution map is not."""
    status = approval or "unknown"
    first = (
        f"Finding: {finding} (probability {probability:.2f}) from model {model_name} "
        f"version {model_version} (approval status: {status})."
    )
    if focus is None:
        second = f"{method}: no image region stands out (flat attribution map)."
    else:
        where = f"the {focus.image_region} of the image"
        if focus.patient_region:
            where += f" ({focus.patient_region})"
        second = (
            f"{method} attribution is {focus.spread}, concentrated in {where}, "
            f"covering {_percent(focus.extent)} of the image."
        )
    third = "The map shows where the model's output is sensitive; it does not localise disease."
    return " ".join((first, second, third))
