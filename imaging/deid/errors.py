"""Why an instance was quarantined, and the exceptions that carry it."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DeidError", "ProfileError", "QuarantineError", "QuarantineReason"]


class QuarantineReason(StrEnum):
    NOT_DICOM = "not_dicom"
    CORRUPT = "corrupt"
    TOO_LARGE = "too_large"
    UNREADABLE = "unreadable"
    MISSING_IDENTIFIERS = "missing_identifiers"
    MISSING_PIXEL_DATA = "missing_pixel_data"
    PIXEL_DATA_LENGTH = "pixel_data_length"
    DECOMPRESSION_LIMIT = "decompression_limit"
    BURNED_IN_ANNOTATION = "burned_in_annotation"
    BURNED_IN_RISK = "burned_in_risk"
    ENCAPSULATED_DOCUMENT = "encapsulated_document"
    PIXEL_PHI_RESIDUAL = "pixel_phi_residual"
    PIXEL_UNDECODABLE = "pixel_undecodable"
    PIXEL_DECODE_LIMIT = "pixel_decode_limit"
    PIXEL_UNSUPPORTED_SYNTAX = "pixel_unsupported_syntax"
    PIXEL_OCR_FAILED = "pixel_ocr_failed"
    PIXEL_OCR_TIMEOUT = "pixel_ocr_timeout"
    PIXEL_OCR_UNAVAILABLE = "pixel_ocr_unavailable"
    DEID_FAILED = "deid_failed"
    WRITE_FAILED = "write_failed"


class DeidError(Exception):
    """Base class of de-identification errors."""


class ProfileError(DeidError):
    """A de-identification profile is invalid."""


class QuarantineError(DeidError):
    """The instance cannot be de-identified safely. ``detail`` never contains PHI."""

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
