"""Pixels out of de-identification: fixed-rectangle cleaning by device rule (as RSNA CTP's pixel
anonymizer) and the lossless write-back of cleaned pixels."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging.decoding import DecompressionLimitError, PixelDataError, UnsupportedSyntaxError, decode_pixels
from imaging.deid.errors import QuarantineError, QuarantineReason
from imaging.deid.profile import PixelCleaningRule

__all__ = ["apply_pixel_cleaning", "decode_for_cleaning", "matching_rule", "store_pixels"]

# PS3.3 C.7.6.1.1.5.1: Lossy Image Compression Method defined terms, by transfer syntax
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",
}
_OFFSET_TABLES = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ lengths): encapsulated only


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


def decode_for_cleaning(ds: Dataset, max_bytes: int | None = None) -> np.ndarray:
    """All frames, bounded; a decoding failure is a quarantine with a specific reason."""
    try:
        return decode_pixels(ds, max_bytes=max_bytes)
    except DecompressionLimitError as exc:
        raise QuarantineError(QuarantineReason.PIXEL_DECODE_LIMIT, str(exc)) from None
    except UnsupportedSyntaxError as exc:
        raise QuarantineError(QuarantineReason.PIXEL_UNSUPPORTED_SYNTAX, str(exc)) from None
    except PixelDataError as exc:
        raise QuarantineError(QuarantineReason.PIXEL_UNDECODABLE, str(exc)) from None


def apply_pixel_cleaning(ds: Dataset, rule: PixelCleaningRule, max_bytes: int | None = None) -> None:
    """Blank the rule's rectangles on every frame; the result is stored losslessly."""
    pixels = np.array(decode_for_cleaning(ds, max_bytes), copy=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = pixels if frames > 1 else pixels[np.newaxis]
    for x, y, width, height in rule.rectangles:
        view[:, y : y + height, x : x + width, ...] = 0
    store_pixels(ds, pixels)


def store_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Replace the pixel data of ``ds`` with ``pixels`` (as decoded), uncompressed.

    Compressed input is written as Explicit VR Little Endian: re-encoding lossy pixel data
    would degrade it twice. Colour decoded from YBR is stored as RGB; Lossy Image Compression
    stays "01" once an image was lossy (PS3.3 C.7.6.1.1.5), with its method recorded.
    """
    meta = ds.file_meta
    source = UID(str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    method = _LOSSY_METHOD.get(str(source))
    if method is not None or str(ds.get("LossyImageCompression", "")) == "01":
        ds.LossyImageCompression = "01"
        if method is not None and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    implicit, little = ds.original_encoding
    # a data set read big endian is written so (pydicom does not convert on write): Explicit VR
    # Big Endian, retired but lossless; one read as implicit VR has elements without a VR
    if little is False:
        syntax = ExplicitVRBigEndian
    else:
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    array = np.ascontiguousarray(pixels)
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">" if little is False else "<"), copy=False)
    bits_allocated = int(ds.get("BitsAllocated", 8) or 8)
    if bits_allocated == 1:
        from pydicom.pixels import pack_bits

        data = pack_bits(array)
    else:
        data = array.tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds[0x7FE00010] = DataElement(0x7FE00010, "OW" if bits_allocated > 8 else "OB", data)
    for tag in _OFFSET_TABLES:
        if tag in ds._dict:
            del ds[tag]
    meta.TransferSyntaxUID = syntax
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples > 1:
        # decoding returns RGB for YBR-encoded input, pixel-interleaved: store what we now hold
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.__dict__.pop("_pixel_array", None)
    ds.__dict__.pop("_pixel_id", None)
