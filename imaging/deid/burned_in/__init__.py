"""Burned-in text in pixels: found by OCR, classified against the header, redacted, re-verified.

>>> from imaging.deid.burned_in import PhiClassifier, PixelScreener
>>> screener = PixelScreener(profile.burned_in)          # Tesseract 5 (tesserocr)
>>> result = screener.screen(ds, PhiClassifier.from_header(names_and_ids, dates))
>>> result.pixels          # cleaned frames when PHI was redacted; stored losslessly by the caller

Recognised text is PHI: it never leaves this subpackage (not logged, not in errors, not in
lineage, which records the engine, its versions and the boxes only).
"""

from imaging.deid.burned_in.classify import COMMON_NAMES, PhiClassifier
from imaging.deid.burned_in.ocr import (
    Box,
    OcrEngine,
    OcrError,
    OcrTimeoutError,
    OcrUnavailableError,
    RapidOcrEngine,
    TesseractEngine,
    TextLine,
    find_tessdata,
)
from imaging.deid.burned_in.render import anatomy_mask, renders, sample_frames
from imaging.deid.burned_in.screen import PixelScreener, ScreenResult

__all__ = [
    "COMMON_NAMES",
    "Box",
    "OcrEngine",
    "OcrError",
    "OcrTimeoutError",
    "OcrUnavailableError",
    "PhiClassifier",
    "PixelScreener",
    "RapidOcrEngine",
    "ScreenResult",
    "TesseractEngine",
    "TextLine",
    "anatomy_mask",
    "find_tessdata",
    "renders",
    "sample_frames",
]
