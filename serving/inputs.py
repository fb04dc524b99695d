"""Request bodies -> validated DICOM instances, or a clear 4xx (never a 5xx, never PHI).

``application/dicom`` carries one Part 10 instance; ``multipart/related; type="application/dicom"``
a series (DICOMweb STOW-RS framing). Each instance is parsed with
:func:`imaging.dicomio.parse_instance` (corrupt, truncated, non-DICOM and pixel-less objects are
refused with the reason) and must be a single-frame, single-channel-or-RGB image.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.dataset import Dataset

from imaging.decoding import DecompressionLimitError, PixelDataError, decode_pixels
from imaging.deid.errors import QuarantineError
from imaging.dicomio import parse_instance
from imaging.gateway.multipart import MultipartError, content_type_params, iter_parts

__all__ = ["DICOM_MEDIA_TYPE", "Instance", "RequestError", "parse_body"]

DICOM_MEDIA_TYPE = "application/dicom"
_MULTIPART = "multipart/related"


class RequestError(ValueError):
    """The request cannot be served as sent; ``status`` is the HTTP status (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Instance:
    """One received instance: its bytes, parsed header and a digest for the audit log."""

    data: bytes
    dataset: Dataset

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _parse_one(data: bytes, max_bytes: int, index: int | None) -> Instance:
    where = "" if index is None else f" (part {index + 1})"
    try:
        dataset = parse_instance(data, max_bytes=max_bytes)
    except QuarantineError as exc:
        status = 413 if exc.reason.value in ("too_large", "decompression_limit") else 400
        raise RequestError(status, f"invalid DICOM{where}: {exc.reason.value}: {exc.detail}") from exc
    if "PixelData" not in dataset or "Rows" not in dataset:
        raise RequestError(422, f"DICOM{where} is not an image (no pixel data)")
    if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
        raise RequestError(422, f"DICOM{where}: multi-frame images are not supported by this endpoint")
    if int(dataset.get("SamplesPerPixel", 1) or 1) not in (1, 3):
        raise RequestError(422, f"DICOM{where}: unsupported samples per pixel")
    _check_compressed_pixels(dataset, where)
    return Instance(data, dataset)


def _check_compressed_pixels(dataset: Dataset, where: str) -> None:
    """Compressed pixel data goes through the bounded decoder once here (declared size and
    every codestream header against the cap) before the model's reader decodes it unbounded."""
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return  # native pixel data: its length was checked against the declared size
    try:
        decode_pixels(dataset)
    except DecompressionLimitError as exc:
        raise RequestError(413, f"invalid DICOM{where}: decompression_limit: {exc}") from exc
    except PixelDataError as exc:
        raise RequestError(400, f"invalid DICOM{where}: pixel data cannot be decoded: {exc}") from exc


def parse_body(body: bytes, content_type: str | None, *, max_bytes: int, max_parts: int) -> list[Instance]:
    """Parse a predict request body (see the module docstring)."""
    if len(body) > max_bytes:
        raise RequestError(413, f"request body exceeds {max_bytes} bytes")
    if not body:
        raise RequestError(400, "empty request body")
    media, params = content_type_params(content_type or "")
    if media == DICOM_MEDIA_TYPE:
        return [_parse_one(body, max_bytes, None)]
    if media == _MULTIPART:
        part_type = params.get("type", DICOM_MEDIA_TYPE).lower()
        if part_type != DICOM_MEDIA_TYPE:
            raise RequestError(415, f'multipart/related must have type="{DICOM_MEDIA_TYPE}"')
        instances: list[Instance] = []
        try:
            for index, part in enumerate(iter_parts(body, params.get("boundary", ""))):
                if part.content_type not in ("", DICOM_MEDIA_TYPE):
                    raise RequestError(415, f"part {index + 1} is not {DICOM_MEDIA_TYPE}")
                if len(instances) >= max_parts:
                    raise RequestError(413, f"at most {max_parts} instances per request")
                instances.append(_parse_one(part.body, max_bytes, index))
        except MultipartError as exc:
            raise RequestError(400, f"malformed multipart/related body: {exc}") from exc
        if not instances:
            raise RequestError(400, "multipart/related body has no parts")
        return instances
    raise RequestError(
        415,
        f'send {DICOM_MEDIA_TYPE} or multipart/related; type="{DICOM_MEDIA_TYPE}" (got {media or "none"})',
    )
