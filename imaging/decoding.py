"""The one bounded pixel decoder: every decode of stored or incoming pixel data goes through here.

A compressed frame of a few bytes can declare an image of gigabytes, in the DICOM header
(Rows x Columns x Frames) or in its own codestream header (JPEG SOF, JPEG 2000 SIZ), which
the codec trusts. Before anything is allocated the decoder therefore checks:

* the declared size (Rows x Columns x Frames x SamplesPerPixel x bytes per decoded sample)
  against an absolute cap (``max_bytes``, default ``Settings.max_decoded_bytes``);
* for JPEG, JPEG-LS, JPEG 2000 and HTJ2K, every frame's codestream header against the declared
  frame size plus headroom, so a codec never allocates more than the header promised.

Errors carry sizes and exception type names, never values of the data set.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DecompressionLimitError",
    "PixelDataError",
    "PixelDecodeError",
    "UnsupportedSyntaxError",
    "decode_pixels",
    "default_max_decoded_bytes",
    "estimate_decoded_bytes",
    "frame_count",
]

DEFAULT_MAX_DECODED_BYTES = 2 * 1024**3
# A codestream may round its size up (e.g. JPEG 2000 tiles, odd 4:2:2 widths): allowed slack.
_HEADROOM_RATIO = 1.0625
_HEADROOM_BYTES = 64 * 1024
_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = (_PIXEL_DATA, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_JPEG_FAMILY = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.7", "1.2.840.10008.1.2.4.8")
_J2K_FAMILY = ("1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")
# Codestream headers sit at the start of a frame; a header further in is not looked for.
_HEADER_SCAN = 64 * 1024


class PixelDataError(Exception):
    """Base class: pixel data that cannot be decoded within the bounds. Messages carry no PHI."""


class DecompressionLimitError(PixelDataError):
    """The declared or codestream size of the pixel data exceeds the bound."""


class PixelDecodeError(PixelDataError):
    """The pixel data cannot be decoded (corrupt, inconsistent, or a codec error)."""


class UnsupportedSyntaxError(PixelDecodeError):
    """No installed decoder handles the transfer syntax."""


def default_max_decoded_bytes() -> int:
    """The absolute cap from the platform settings (``RADGATE_MAX_DECODED_BYTES``)."""
    try:
        from governance.settings import get_settings

        return int(get_settings().max_decoded_bytes)
    except Exception:  # settings that fail to load must not lift the bound
        return DEFAULT_MAX_DECODED_BYTES


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PixelDecodeError(f"{keyword} is not an integer") from exc


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent."""
    return max(1, _int(ds, "NumberOfFrames", 1))


def _sample_bytes(bits_allocated: int) -> int:
    if bits_allocated <= 0 or (bits_allocated != 1 and bits_allocated % 8):
        raise PixelDecodeError(f"BitsAllocated {bits_allocated} is not decodable")
    return 1 if bits_allocated == 1 else bits_allocated // 8  # 1-bit data is unpacked to bytes


def estimate_decoded_bytes(ds: Dataset) -> int:
    """Bytes the decoded array of all frames takes, from the declared attributes alone."""
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows <= 0 or columns <= 0:
        raise PixelDecodeError("Rows and Columns must be positive")
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples not in (1, 3, 4):
        raise PixelDecodeError(f"SamplesPerPixel {samples} is not decodable")
    return rows * columns * frame_count(ds) * samples * _sample_bytes(_int(ds, "BitsAllocated", 16))


def _syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not uid:
        raise UnsupportedSyntaxError("no transfer syntax in the file meta")
    return UID(str(uid))


def _jpeg_size(frame: bytes) -> tuple[int, int, int, int] | None:
    """(rows, columns, components, precision) from the first SOF (or JPEG-LS SOF55) marker."""
    end = min(len(frame), _HEADER_SCAN)
    if frame[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= end:
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", frame, pos + 2)
        if marker in _JPEG_SOF:
            if pos + 10 > len(frame):
                return None
            precision, rows, columns, components = struct.unpack_from(">BHHB", frame, pos + 4)
            return rows, columns, components, precision
        if marker == 0xDA or length < 2:  # scan data before any frame header: invalid
            return None
        pos += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int, int, int] | None:
    """(rows, columns, components, precision) from the SIZ marker of a JPEG 2000 codestream
    (also found inside a JP2 wrapper, which some writers put in DICOM)."""
    start = frame.find(b"\xff\x4f\xff\x51", 0, _HEADER_SCAN)
    if start < 0 or start + 42 > len(frame):
        return None
    siz = start + 4
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", frame, siz + 4)
    (components,) = struct.unpack_from(">H", frame, siz + 36)
    if siz + 38 + 3 * components > len(frame) or components == 0:
        return None
    precision = max((frame[siz + 38 + 3 * i] & 0x7F) + 1 for i in range(components))
    return max(0, ysiz - yosiz), max(0, xsiz - xosiz), components, precision


def _frames(ds: Dataset, frames: int) -> Iterator[bytes]:
    try:
        yield from generate_frames(ds.PixelData, number_of_frames=frames)
    except (ValueError, KeyError, TypeError, struct.error, EOFError) as exc:
        raise PixelDecodeError(f"encapsulated pixel data is malformed ({type(exc).__name__})") from exc


def _check_codestreams(ds: Dataset, syntax: UID, frame_bytes: int, index: int | None) -> None:
    """Every frame's codestream promises no more than the declared frame size plus headroom."""
    if syntax.startswith(_JPEG_FAMILY) and not syntax.startswith("1.2.840.10008.1.2.4.9"):
        read = _jpeg_size
    elif syntax.startswith(_J2K_FAMILY):
        read = _j2k_size
    else:
        return  # RLE: segments decode into the declared size; native: length checked by pydicom
    limit = frame_bytes * _HEADROOM_RATIO + _HEADROOM_BYTES
    for number, frame in enumerate(_frames(ds, frame_count(ds))):
        if index is not None and number != index:
            continue
        size = read(frame)
        if size is None:
            raise PixelDecodeError(f"frame {number} has no readable codestream header")
        rows, columns, components, precision = size
        promised = rows * columns * components * (2 if precision > 8 else 1)
        if promised > limit:
            raise DecompressionLimitError(
                f"frame {number} codestream declares {promised} bytes, the header allows {frame_bytes}"
            )


def decode_pixels(ds: Dataset, *, max_bytes: int | None = None, index: int | None = None) -> np.ndarray:
    """The decoded pixels of ``ds`` (all frames, or frame ``index``), YBR converted to RGB.

    Shapes are pydicom's: (rows, cols[, samples]) for one frame, (frames, rows, cols[, samples])
    for several. Raises :class:`DecompressionLimitError` when the declared size exceeds
    ``max_bytes`` or a codestream promises more than declared, :class:`UnsupportedSyntaxError`
    when no decoder handles the syntax, :class:`PixelDecodeError` for anything undecodable.
    """
    from pydicom.pixels import get_decoder, pixel_array

    cap = default_max_decoded_bytes() if max_bytes is None else int(max_bytes)
    if not any(tag in ds._dict for tag in _PIXEL_TAGS):
        raise PixelDecodeError("no pixel data")
    total = estimate_decoded_bytes(ds)
    frames = frame_count(ds)
    if index is not None and not 0 <= index < frames:
        raise PixelDecodeError(f"frame index {index} outside 0..{frames - 1}")
    wanted = total if index is None else total // frames
    if wanted > cap:
        raise DecompressionLimitError(f"declared {wanted} decoded bytes exceeds the cap of {cap}")
    syntax = _syntax(ds)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedSyntaxError(f"no decoder for transfer syntax {syntax}") from exc
    if not decoder.is_available:
        raise UnsupportedSyntaxError(f"no installed plugin decodes transfer syntax {syntax}")
    if syntax.is_compressed and _PIXEL_DATA in ds._dict:
        _check_codestreams(ds, syntax, total // frames, index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = pixel_array(ds, index=index)
    except MemoryError as exc:
        raise DecompressionLimitError("decoding ran out of memory") from exc
    except Exception as exc:  # codecs raise their own types (RuntimeError, ValueError...)
        raise PixelDecodeError(f"pixel data could not be decoded ({type(exc).__name__})") from exc
    except BaseException as exc:
        # A Rust codec (pylibjpeg-rle) that panics on a malformed stream raises PyO3's
        # PanicException, a BaseException: the input is bad, not the process.
        if type(exc).__name__ != "PanicException":
            raise
        raise PixelDecodeError("pixel data could not be decoded (codec panicked)") from exc
    if array.nbytes > wanted * _HEADROOM_RATIO + _HEADROOM_BYTES:
        raise DecompressionLimitError(f"decoded {array.nbytes} bytes, declared {wanted}")
    return array
