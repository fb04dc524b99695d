"""Parse and validate incoming instances; encode outgoing ones. Errors carry no PHI."""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID_dictionary

from imaging.deid.errors import QuarantineError, QuarantineReason

__all__ = ["encode_instance", "parse_instance"]

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Exceptions pydicom documents (or lets through from struct/codec layers) for malformed input.
_PARSE_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    struct.error,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    OverflowError,
    UnicodeError,
    NotImplementedError,
    AttributeError,
    RecursionError,
    MemoryError,
)


def parse_instance(data: bytes, *, max_bytes: int) -> Dataset:
    """Parse one Part 10 file (or a bare dataset) and check it can be de-identified.

    Raises :class:`QuarantineError` for non-DICOM, corrupt, oversize input, missing SOP
    identifiers and image objects without (enough) pixel data.
    """
    if len(data) > max_bytes:
        raise QuarantineError(QuarantineReason.TOO_LARGE, f"{len(data)} bytes exceeds limit {max_bytes}")
    if len(data) < 8:
        raise QuarantineError(QuarantineReason.NOT_DICOM, "input too short to be DICOM")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        # dcmread reads every top-level element header and value, so truncation shows here;
        # values are decoded lazily, only where the profile changes them.
        ds = dcmread(BytesIO(data), force=not has_preamble)
    except _PARSE_ERRORS as exc:
        reason = QuarantineReason.CORRUPT if has_preamble else QuarantineReason.NOT_DICOM
        raise QuarantineError(reason, f"cannot parse ({type(exc).__name__})") from exc
    for tag in ds.keys():
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        value = getattr(raw, "value", None)
        if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) < length:
            reason = QuarantineReason.CORRUPT if has_preamble else QuarantineReason.NOT_DICOM
            raise QuarantineError(reason, f"element {tag} is truncated")
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        reason = (
            QuarantineReason.MISSING_IDENTIFIERS
            if has_preamble or len(ds) > 3
            else QuarantineReason.NOT_DICOM
        )
        raise QuarantineError(reason, "no SOP Class UID or SOP Instance UID")
    _check_pixels(ds)
    if not has_preamble or "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else UID("1.2.840.10008.1.2.2")
        )
    return ds


def _is_image_class(sop_class: str) -> bool:
    entry = UID_dictionary.get(sop_class)
    return entry is not None and "Image Storage" in entry[0] and "Presentation" not in entry[0]


def _check_pixels(ds: Dataset) -> None:
    if "Rows" not in ds or "Columns" not in ds:
        # An image object without its image (often a truncated file) cannot be used.
        if _is_image_class(str(ds.get("SOPClassUID", ""))) and not any(t in ds for t in _PIXEL_TAGS):
            raise QuarantineError(QuarantineReason.MISSING_PIXEL_DATA, "image object without pixel data")
        return
    present = [t for t in _PIXEL_TAGS if t in ds]
    if not present:
        raise QuarantineError(QuarantineReason.MISSING_PIXEL_DATA, "image attributes without pixel data")
    if present[0] != "PixelData":
        return
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and UID(syntax).is_compressed:
        return
    element = ds["PixelData"]
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError) as exc:
        raise QuarantineError(QuarantineReason.CORRUPT, "invalid image pixel attributes") from exc
    expected = (rows * cols * frames * samples * bits + 7) // 8
    actual = len(element.value or b"")
    if actual < expected:
        raise QuarantineError(
            QuarantineReason.PIXEL_DATA_LENGTH, f"pixel data has {actual} bytes, image needs {expected}"
        )


def encode_instance(ds: Dataset) -> bytes:
    """The Part 10 encoding of ``ds``, keeping its transfer syntax (compressed data untouched)."""
    buffer = BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except _PARSE_ERRORS as exc:
        raise QuarantineError(QuarantineReason.WRITE_FAILED, f"cannot encode ({type(exc).__name__})") from exc
    return buffer.getvalue()
