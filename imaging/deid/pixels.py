"""Burned-in text: pixel cleaning by configured rectangles (as RSNA CTP's pixel anonymizer)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from imaging.deid.errors import QuarantineError, QuarantineReason
from imaging.deid.profile import PixelCleaningRule

__all__ = ["apply_pixel_cleaning", "matching_rule"]


def _matches(expected: str | int | None, actual: object) -> bool:
    if expected is None:
        return True
    if isinstance(expected, int):
        return expected == actual
    return str(actual or "").strip().upper() == expected.strip().upper()


def matching_rule(ds: Dataset, rules: Iterable[PixelCleaningRule]) -> PixelCleaningRule | None:
    """The first rule whose modality, manufacturer, model and size match ``ds``."""
    if "PixelData" not in ds:
        return None
    for rule in rules:
        if (
            _matches(rule.modality, ds.get("Modality"))
            and _matches(rule.manufacturer, ds.get("Manufacturer"))
            and _matches(rule.model, ds.get("ManufacturerModelName"))
            and _matches(rule.rows, ds.get("Rows"))
            and _matches(rule.columns, ds.get("Columns"))
        ):
            return rule
    return None


def apply_pixel_cleaning(ds: Dataset, rule: PixelCleaningRule) -> None:
    """Blank the rule's rectangles on every frame; the result is stored uncompressed.

    Compressed input is decoded and written as Explicit VR Little Endian, since re-encoding
    lossy pixel data would degrade it twice.
    """
    try:
        pixels = np.array(ds.pixel_array, copy=True)
    except Exception as exc:  # decoders raise their own types; the reason is recorded, not the data
        raise QuarantineError(
            QuarantineReason.BURNED_IN_RISK,
            f"pixels could not be decoded for cleaning ({type(exc).__name__})",
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    view = pixels if frames > 1 else pixels[np.newaxis]
    for x, y, width, height in rule.rectangles:
        view[:, y : y + height, x : x + width, ...] = 0
    ds.PixelData = view.reshape(pixels.shape).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if samples > 1:
        # pixel_array returns RGB for YBR-encoded input; store what we now hold
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
