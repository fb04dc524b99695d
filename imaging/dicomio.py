"""Parse and validate incoming instances; encode outgoing ones. Errors carry no PHI."""

from __future__ import annotations

import struct
import zlib
from copy import copy
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32

from imaging.deid.errors import QuarantineError, QuarantineReason

__all__ = [
    "INFLATED_HEADER_BUDGET",
    "Parts",
    "encode_instance",
    "encode_instance_parts",
    "inflate_bounded",
    "inflated_data_set",
    "parse_instance",
]

# PixelData, FloatPixelData, DoubleFloatPixelData; other attributes read by tag, not keyword
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_SOP_CLASS, _SOP_INSTANCE, _ROWS, _COLUMNS = 0x00080016, 0x00080018, 0x00280010, 0x00280011
_FRAMES, _SAMPLES, _BITS_ALLOCATED = 0x00280008, 0x00280002, 0x00280100
# Top-level values longer than this are not read by the parser (pixel data, not headers).
_DEFER_SIZE = 64 * 1024
_PIXEL_DATA = BaseTag(0x7FE00010)
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


def parse_instance(data: bytes, *, max_bytes: int, max_inflated_bytes: int | None = None) -> Dataset:
    """Parse one Part 10 file (or a bare dataset) and check it can be de-identified.

    Raises :class:`QuarantineError` for non-DICOM, corrupt, oversize input, missing SOP
    identifiers, image objects without (enough) pixel data, and a Deflated Explicit VR data set
    that inflates past its bound (``decompression_limit``, see :func:`inflate_bounded`;
    ``max_inflated_bytes`` is the absolute cap, default ``Settings.max_decoded_bytes``).
    """
    if len(data) > max_bytes:
        raise QuarantineError(QuarantineReason.TOO_LARGE, f"{len(data)} bytes exceeds limit {max_bytes}")
    if len(data) < 8:
        raise QuarantineError(QuarantineReason.NOT_DICOM, "input too short to be DICOM")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        deflated = _deflated_start(data, has_preamble)
        if deflated is not None:
            # pydicom would inflate the whole stream at once, however far it goes: inflate it
            # here within bounds, then parse the inflated data set (positions are its own).
            preamble, meta, start = deflated
            inflated = inflate_bounded(memoryview(data)[start:], max_inflated_bytes)
            ds = dcmread(BytesIO(inflated), force=True)
            ds.file_meta, ds.preamble = meta, preamble
        else:
            # dcmread reads every top-level element header, so truncation shows here; values
            # are decoded lazily, only where the profile changes them. Bulk values (pixel data)
            # are not even read: they stay in ``data`` and the encoder copies them from there.
            ds = dcmread(BytesIO(data), force=not has_preamble, defer_size=_DEFER_SIZE)
            ds._radgate_source = data  # where deferred values lie
    except _PARSE_ERRORS as exc:
        reason = QuarantineReason.CORRUPT if has_preamble else QuarantineReason.NOT_DICOM
        raise QuarantineError(reason, f"cannot parse ({type(exc).__name__})") from exc
    for tag, raw in ds._dict.items():  # as read: no decoding, no lookups
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        length, value = raw.length, raw.value
        if value is None:  # deferred: skipped over, not read
            truncated = raw.value_tell + length > len(data)
        else:
            truncated = isinstance(value, bytes) and len(value) < length
        if truncated:
            reason = QuarantineReason.CORRUPT if has_preamble else QuarantineReason.NOT_DICOM
            raise QuarantineError(reason, f"element {tag} is truncated")
    if _SOP_CLASS not in ds._dict or _SOP_INSTANCE not in ds._dict:
        reason = (
            QuarantineReason.MISSING_IDENTIFIERS
            if has_preamble or len(ds) > 3
            else QuarantineReason.NOT_DICOM
        )
        raise QuarantineError(reason, "no SOP Class UID or SOP Instance UID")
    _check_pixels(ds, max_inflated_bytes)
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


def inflated_data_set(data: bytes, max_inflated_bytes: int | None = None) -> bytes | None:
    """For a Deflated Explicit VR Little Endian Part 10 file, its data set inflated within the
    bounds of :func:`inflate_bounded` (``dcmread(..., force=True)`` reads it); None for any other
    input. Use it wherever received bytes are read outside :func:`parse_instance`: pydicom
    inflates a deflated file whole, even for ``stop_before_pixels``."""
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    deflated = _deflated_start(data, has_preamble)
    if deflated is None:
        return None
    return inflate_bounded(memoryview(data)[deflated[2] :], max_inflated_bytes)


def _deflated_start(data: bytes, has_preamble: bool) -> tuple[bytes | None, FileMetaDataset, int] | None:
    """(preamble, file meta, offset of the data set) when the file meta says Deflated Explicit
    VR Little Endian; None otherwise (and for bare data sets)."""
    if not has_preamble or len(data) < 144:
        return None
    # Cheap first: the Deflated syntax's UID must appear in the file meta group (whose length
    # is its first element's value); only then is the meta parsed.
    (group_length,) = struct.unpack_from("<L", data, 140)
    if _DEFLATED_UID not in data[132 : 144 + min(group_length, 1 << 16)]:
        return None
    stream = BytesIO(data)
    preamble = read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    return preamble, meta, stream.tell()


# Everything before the pixel data of a deflated data set (its header) may inflate to this
# much; the pixel data to what Rows x Columns x Frames x Samples x BitsAllocated declare, with
# the decoder's headroom. Beyond, the data set is not inflated further.
INFLATED_HEADER_BUDGET = 16 * 1024 * 1024
_INFLATE_STEP = 1024 * 1024
_DEFLATED_UID = DeflatedExplicitVRLittleEndian.encode("ascii")
_HEADROOM_RATIO = 1.0625
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def inflate_bounded(stream: bytes | memoryview, max_inflated_bytes: int | None = None) -> bytes:
    """The inflated data set of a Deflated Explicit VR Little Endian file (``stream``: what
    follows the file meta), inflated in steps of at most 1 MiB of output so that a bomb is
    stopped as soon as it passes its bound, never after.

    The bound: the header (everything before group 0028 has been read past) within
    ``INFLATED_HEADER_BUDGET``; then the whole within that budget plus the pixel bytes the image
    attributes declare (plus headroom), and never over ``max_inflated_bytes`` (default: the
    platform's ``max_decoded_bytes``). Over it: :class:`QuarantineError` ``decompression_limit``.
    """
    if max_inflated_bytes is None:
        from imaging.decoding import default_max_decoded_bytes

        max_inflated_bytes = default_max_decoded_bytes()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    limit = min(max_inflated_bytes, INFLATED_HEADER_BUDGET)
    declared: int | None = None  # pixel bytes, once the header has been read
    walk = _HeaderWalk()
    pending: bytes | memoryview = stream
    while True:
        try:
            chunk = inflater.decompress(pending, min(_INFLATE_STEP, limit + 1 - len(out)))
        except zlib.error as exc:
            raise QuarantineError(QuarantineReason.CORRUPT, "deflated data set is corrupt") from exc
        out += chunk
        if declared is None:
            declared = walk.feed(out, complete=inflater.eof)
            if declared is not None:
                limit = min(max_inflated_bytes, INFLATED_HEADER_BUDGET + int(declared * _HEADROOM_RATIO))
        if len(out) > limit:
            raise QuarantineError(
                QuarantineReason.DECOMPRESSION_LIMIT,
                f"deflated data set inflates past {limit} bytes (declared pixel data {declared or 0} bytes)",
            )
        tail = inflater.unconsumed_tail
        if inflater.eof or (not chunk and len(tail) == len(pending)):
            break
        pending = tail
    if not inflater.eof:
        raise QuarantineError(QuarantineReason.CORRUPT, "deflated data set is truncated")
    return bytes(out)


class _HeaderWalk:
    """Walks the top-level elements of an inflated (explicit VR little endian) data set as it
    grows, until past group 0028: ``feed`` returns the pixel bytes its image attributes declare
    (0 when there are none), or None while the data does not reach that far. It resumes where
    it stopped; the elements it may visit in all are bounded (a header of millions of tiny
    elements is refused rather than walked again and again)."""

    MAX_ELEMENTS = 500_000

    def __init__(self) -> None:
        self.pos = 0
        self.visited = 0
        self.values: dict[int, bytes] = {}

    def feed(self, header: bytearray, *, complete: bool) -> int | None:
        view = memoryview(header)
        try:
            return self._walk(view, complete)
        finally:
            view.release()

    def _count(self) -> None:
        self.visited += 1
        if self.visited > self.MAX_ELEMENTS:
            raise QuarantineError(
                QuarantineReason.DECOMPRESSION_LIMIT, "deflated header has too many elements"
            )

    def _walk(self, view: memoryview, complete: bool) -> int | None:
        end = len(view)
        while self.pos + 8 <= end:
            self._count()
            pos = self.pos
            group, element = struct.unpack_from("<HH", view, pos)
            if group > 0x0028:
                return _pixel_bytes(self.values)
            header = _element_header(view, pos)
            if header is None:
                break
            pos, length = header
            if length == 0xFFFFFFFF:
                skipped = self._skip_undefined(view, pos)
                if skipped is None:
                    break
                self.pos = skipped
                continue
            tag = group << 16 | element
            if group == 0x0028 and tag in (_ROWS, _COLUMNS, _FRAMES, _SAMPLES, _BITS_ALLOCATED):
                if pos + length > end:
                    break
                self.values[tag] = bytes(view[pos : pos + length])
            self.pos = pos + length
        return _pixel_bytes(self.values) if complete else None

    def _skip_undefined(self, view: memoryview, pos: int, depth: int = 0) -> int | None:
        """The offset after an undefined-length value (items up to the sequence delimiter),
        or None when the data ends first."""
        end = len(view)
        if depth > 16:
            raise QuarantineError(QuarantineReason.CORRUPT, "sequences nested too deep")
        while pos + 8 <= end:
            self._count()
            group, element, length = struct.unpack_from("<HHL", view, pos)
            if group == 0xFFFE:  # item, item delimiter or sequence delimiter: no VR
                pos += 8
                if element == 0xE0DD:
                    return pos
                if element == 0xE000 and length != 0xFFFFFFFF:
                    pos += length
                continue
            header = _element_header(view, pos)  # an element inside an undefined-length item
            if header is None:
                return None
            pos, length = header
            if length == 0xFFFFFFFF:
                skipped = self._skip_undefined(view, pos, depth + 1)
                if skipped is None:
                    return None
                pos = skipped
            else:
                pos += length
        return None


def _element_header(view: memoryview, pos: int) -> tuple[int, int] | None:
    """(offset of the value, its length) of the explicit VR element at ``pos``."""
    if bytes(view[pos + 4 : pos + 6]) in _LONG_LENGTH_VRS:
        if pos + 12 > len(view):
            return None
        return pos + 12, int(struct.unpack_from("<L", view, pos + 8)[0])
    return pos + 8, int(struct.unpack_from("<H", view, pos + 6)[0])


def _pixel_bytes(values: dict[int, bytes]) -> int:
    """Rows x Columns x Frames x Samples x BitsAllocated / 8 from raw values (0 if no image)."""

    def us(tag: int, default: int) -> int:
        raw = values.get(tag)
        return struct.unpack("<H", raw[:2])[0] if raw is not None and len(raw) >= 2 else default

    rows, columns = us(_ROWS, 0), us(_COLUMNS, 0)
    try:
        frames = max(1, int(values.get(_FRAMES, b"1").strip(b"\0 ") or 1))
    except ValueError:
        frames = 1
    return rows * columns * frames * max(1, us(_SAMPLES, 1)) * max(1, us(_BITS_ALLOCATED, 16)) // 8


def _is_image_class(sop_class: str) -> bool:
    entry = UID_dictionary.get(sop_class)
    return entry is not None and "Image Storage" in entry[0] and "Presentation" not in entry[0]


def _value(ds: Dataset, tag: int, default: Any) -> Any:
    """``ds.get(keyword, default)`` by tag (no keyword lookup)."""
    return ds[tag].value if tag in ds._dict else default


def _check_declared_size(ds: Dataset, max_decoded_bytes: int | None) -> None:
    """Compressed pixel data is not decoded here; what it declares to decode to is checked
    against the decoder's cap, so an instance that no bounded decoder would ever open is
    quarantined at intake rather than stored."""
    from imaging.decoding import PixelDecodeError, default_max_decoded_bytes, estimate_decoded_bytes

    cap = default_max_decoded_bytes() if max_decoded_bytes is None else max_decoded_bytes
    try:
        declared = estimate_decoded_bytes(ds)
    except PixelDecodeError:
        return  # attributes a decoder refuses by itself; the de-identifier's screen sees them
    if declared > cap:
        raise QuarantineError(
            QuarantineReason.DECOMPRESSION_LIMIT, f"pixel data declares {declared} decoded bytes, cap {cap}"
        )


def _check_pixels(ds: Dataset, max_decoded_bytes: int | None = None) -> None:
    elements = ds._dict
    if _ROWS not in elements or _COLUMNS not in elements:
        # An image object without its image (often a truncated file) cannot be used.
        if _is_image_class(str(_value(ds, _SOP_CLASS, ""))) and not any(t in elements for t in _PIXEL_TAGS):
            raise QuarantineError(QuarantineReason.MISSING_PIXEL_DATA, "image object without pixel data")
        return
    present = [t for t in _PIXEL_TAGS if t in elements]
    if not present:
        raise QuarantineError(QuarantineReason.MISSING_PIXEL_DATA, "image attributes without pixel data")
    if present[0] != _PIXEL_DATA:
        return
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and UID(syntax).is_compressed:
        _check_declared_size(ds, max_decoded_bytes)
        return
    try:
        rows, cols = int(ds[_ROWS].value), int(ds[_COLUMNS].value)
        frames = int(_value(ds, _FRAMES, 1) or 1)
        samples = int(_value(ds, _SAMPLES, 1) or 1)
        bits = int(_value(ds, _BITS_ALLOCATED, 16) or 16)
    except (TypeError, ValueError) as exc:
        raise QuarantineError(QuarantineReason.CORRUPT, "invalid image pixel attributes") from exc
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if samples == 3 and str(_value(ds, 0x00280004, "")).strip().upper() == "YBR_FULL_422":
        expected = expected * 2 // 3  # native 4:2:2: two lumas share one chroma pair
    element = ds._dict[_PIXEL_DATA]
    if isinstance(element, RawDataElement) and element.value is None and element.length != 0xFFFFFFFF:
        actual = element.length  # deferred: within data (checked above), not read
    else:
        actual = len(ds["PixelData"].value or b"")
    if actual < expected:
        raise QuarantineError(
            QuarantineReason.PIXEL_DATA_LENGTH, f"pixel data has {actual} bytes, image needs {expected}"
        )


# An encoding in pieces: bytes, and views of the parsed input where values are copied through.
Parts = list[bytes | memoryview]


def encode_instance(ds: Dataset) -> bytes:
    """The Part 10 encoding of ``ds``, keeping its transfer syntax (compressed data untouched).

    The bytes are those of pydicom's ``save_as(enforce_file_format=True)``; elements still
    undecoded are copied through as read instead of going through pydicom's per-element writer.
    """
    return b"".join(encode_instance_parts(ds))


def encode_instance_parts(ds: Dataset) -> Parts:
    """:func:`encode_instance` in pieces, whose concatenation it is: a writer or a hash takes
    them one by one, and bulk values are not copied into one more buffer on the way."""
    try:
        return _encode_part10_parts(ds)
    except Exception:
        return [encode_reference(ds)]  # pydicom's own path decides: it writes or raises its error


def encode_reference(ds: Dataset) -> bytes:
    """pydicom's encoding of ``ds`` (the general path, and the reference of :func:`encode_instance`)."""
    buffer = BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except _PARSE_ERRORS as exc:
        raise QuarantineError(QuarantineReason.WRITE_FAILED, f"cannot encode ({type(exc).__name__})") from exc
    return buffer.getvalue()


class _Unsupported(Exception):
    """The dataset needs pydicom's general writer (big endian, deflate, meta in the dataset...)."""


# Explicit VR Big Endian (retired, still found in archives) is written as pydicom writes it:
# headers, item tags and new numbers big endian; raw values copied as read (they are already).
_BYTE_ORDER = {True: "<", False: ">"}  # little endian?
_ITEM = {k: struct.pack(f"{o}HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) for k, o in _BYTE_ORDER.items()}
_ITEM_DELIMITER = {k: struct.pack(f"{o}HHL", 0xFFFE, 0xE00D, 0) for k, o in _BYTE_ORDER.items()}
_SEQUENCE_DELIMITER = {k: struct.pack(f"{o}HHL", 0xFFFE, 0xE0DD, 0) for k, o in _BYTE_ORDER.items()}
_ITEM_TAG = {k: struct.pack(f"{o}HH", 0xFFFE, 0xE000) for k, o in _BYTE_ORDER.items()}
_HEADERS = {
    k: tuple(struct.Struct(o + f).pack for f in ("HHL", "HH2sHL", "HH2sL", "HH2sH"))
    for k, o in _BYTE_ORDER.items()
}
_STRING_VRS = frozenset({"AE", "AS", "CS", "UR", "UI", "DA", "DT", "TM"})  # pydicom's write_string
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})  # pydicom's write_text
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


def _encode_part10(ds: Dataset) -> bytes:
    """What ``dcmwrite(..., enforce_file_format=True)`` writes, for non-deflated data kept in the
    byte order it was read in."""
    return b"".join(_encode_part10_parts(ds))


def _encode_part10_parts(ds: Dataset) -> Parts:
    """:func:`_encode_part10` in pieces."""
    if any(t >> 16 in (0, 2) for t in ds._dict):
        raise _Unsupported
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        raise _Unsupported
    syntax = meta.get("TransferSyntaxUID")
    if syntax is None or syntax.is_private or not syntax.is_transfer_syntax:
        raise _Unsupported
    if syntax == DeflatedExplicitVRLittleEndian:
        raise _Unsupported
    little = bool(syntax.is_little_endian)
    if ds.original_encoding[1] is False and little:
        raise _Unsupported  # save_as refuses to convert big endian data
    if not little and ds.original_encoding != (False, False):
        raise _Unsupported  # big endian written only for data read so (no conversion)
    preamble = getattr(ds, "preamble", None)
    if preamble and len(preamble) != 128:
        raise _Unsupported
    file_meta = FileMetaDataset()  # a copy: the caller's file meta stays as it is
    for tag, meta_elem in meta._dict.items():
        file_meta[tag] = copy(meta_elem)
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        current, wanted = file_meta.get(meta_keyword, None), ds.get(keyword, None)
        if current is None or (wanted and wanted != current):
            setattr(file_meta, meta_keyword, wanted)
    validate_file_meta(file_meta, enforce_standard=True)
    if "PixelData" in ds and not _raw_pixels_as_written(ds._dict[_PIXEL_DATA], syntax.is_compressed):
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    # pydicom's write_file_meta_info: the group length first, then the group (explicit VR LE)
    group_length = file_meta._dict.pop(BaseTag(0x00020000), None)
    if group_length is not None and group_length.VR != "UL":
        raise _Unsupported
    meta_chunks: list[bytes] = []
    _Writer(False, meta_chunks).dataset(file_meta, default_encoding)
    meta_bytes = b"".join(meta_chunks)
    chunks: Parts = [preamble or b"\x00" * 128, b"DICM"]
    chunks.extend((struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(meta_bytes)), meta_bytes))
    source = getattr(ds, "_radgate_source", None)
    _Writer(syntax.is_implicit_VR, chunks, source, little=little).dataset(ds, default_encoding)
    return _coalesce(chunks)


def _coalesce(chunks: Parts) -> Parts:
    """Runs of small chunks joined; bulk values (views of the input, pixel data) left as they are."""
    out: Parts = []
    run: Parts = []
    for chunk in chunks:
        if len(chunk) < _DEFER_SIZE:
            run.append(chunk)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(chunk)
    if run:
        out.append(b"".join(run))
    return out


def _raw_pixels_as_written(elem: Any, compressed: bool) -> bool:
    """True when pixel data still as read would be written as pydicom writes it once decoded
    (same VR, length form and even length), so it can be copied through without decoding."""
    if not isinstance(elem, RawDataElement):
        return False
    if elem.value is None and elem.length == 0xFFFFFFFF:
        return False  # encapsulated and deferred: its end is only known by reading it
    length = elem.length if elem.value is None else len(elem.value)
    return (
        elem.VR in (None, "OB", "OW")
        and (elem.length == 0xFFFFFFFF) == compressed
        and (compressed or length % 2 == 0)
    )


def _plain(elem: Any) -> bool:
    """A decoded, non-sequence element whose VR is not ambiguous."""
    return isinstance(elem, DataElement) and elem.VR != "SQ" and elem.VR not in AMBIGUOUS_VR


def _text_bytes(elem: DataElement, byte_order: str = "<") -> bytes | None:
    """A string value's encoding as pydicom writes it, for the simple cases; None for the rest.

    Single-byte string VRs are written as ISO 8859-1 (pydicom's ``write_string``); text VRs
    only when ASCII, whose encoding is the same in every character set DICOM allows.
    """
    vr, value = elem.VR, elem.value
    if elem.is_undefined_length:
        return None
    number = _NUMBER_FORMATS.get(vr)
    if number is not None:
        # pydicom's write_numbers, single value (lists may hold LUT descriptors: pydicom's path)
        if type(value) is int or (type(value) is float and vr in ("FL", "FD")):
            return struct.pack(byte_order + number, value)
        return None
    if vr not in _STRING_VRS and vr not in _TEXT_VRS:
        return None
    if not isinstance(value, str):
        if not isinstance(value, MultiValue | list) or not all(isinstance(v, str) for v in value):
            return None
        value = "\\".join(value)
    if vr in _TEXT_VRS and not value.isascii():
        return None
    if len(value) % 2:
        value += "\x00" if vr == "UI" else " "
    return value.encode("latin-1")


class _Writer:
    """Encodes a dataset as pydicom's ``write_dataset`` does, copying raw elements through."""

    def __init__(
        self, implicit: bool, chunks: list[Any], source: bytes | None = None, *, little: bool = True
    ) -> None:
        self.implicit = implicit
        self.little = little
        self.order = _BYTE_ORDER[little]
        # implicit VR headers and items; explicit VR headers: 32-bit length, undefined, 16-bit
        self.tag_length, self.long_header, self.undefined_header, self.short_header = _HEADERS[little]
        self.chunks = chunks
        self.source = source  # the parsed bytes, where deferred values are copied from

    def dataset(self, ds: Dataset, parent_encoding: Any) -> None:
        elements = ds._dict
        if (
            ds.original_encoding != (self.implicit, self.little)
            or ds.original_character_set != ds._character_set
        ) and not all(_plain(e) for e in elements.values()):
            # values must be re-encoded (other VR encoding or character set): pydicom converts
            # raw elements and resolves ambiguous VRs first. A dataset built in memory of plain
            # elements (new code items) has nothing to convert and is written below.
            buffer = self._buffer()
            write_dataset(buffer, ds, parent_encoding)
            self.chunks.append(buffer.getvalue())
            return
        encoding = ds.get("SpecificCharacterSet", parent_encoding)
        for tag in sorted(elements, key=int):
            if tag & 0xFFFF == 0 and tag >> 16 > 6:
                continue  # retired group lengths are not written
            elem = elements[tag]
            if isinstance(elem, RawDataElement):
                self._raw(elem)
            elif elem.VR == "SQ":
                self._sequence(elem, encoding)
            elif elem.VR in _BINARY_VRS and type(elem.value) is bytes:
                self._binary(elem)
            else:
                data = _text_bytes(elem, self.order)
                if data is None:
                    buffer = self._buffer()
                    write_data_element(buffer, elem, encoding)
                    self.chunks.append(buffer.getvalue())
                else:
                    self._header(elem.tag, elem.VR, len(data), False)
                    self.chunks.append(data)

    def _buffer(self) -> DicomBytesIO:
        buffer = DicomBytesIO()
        buffer.is_implicit_VR, buffer.is_little_endian = self.implicit, self.little
        return buffer

    def _header(self, tag: int, vr: str | None, length: int, undefined: bool) -> None:
        if self.implicit:
            self.chunks.append(self.tag_length(tag >> 16, tag & 0xFFFF, 0xFFFFFFFF if undefined else length))
            return
        if not vr or len(vr) != 2:
            raise _Unsupported  # pydicom refuses it with its own error
        if vr not in _LONG_VRS and not undefined and length > 0xFFFF:
            vr = "UN"  # PS3.5 6.2.2: too long for a 16-bit length field
        if vr in _LONG_VRS:
            header = self.long_header(
                tag >> 16,
                tag & 0xFFFF,
                vr.encode(default_encoding),
                0,
                0xFFFFFFFF if undefined else length,
            )
        elif undefined:
            header = self.undefined_header(tag >> 16, tag & 0xFFFF, vr.encode(default_encoding), 0xFFFFFFFF)
        else:
            header = self.short_header(tag >> 16, tag & 0xFFFF, vr.encode(default_encoding), length)
        self.chunks.append(header)

    def _raw(self, elem: RawDataElement) -> None:
        value: bytes | memoryview | None = elem.value
        if value is None and self.source is not None and 0 < elem.length != 0xFFFFFFFF:
            # deferred by the parser: the value's bytes in the input, not copied
            value = memoryview(self.source)[elem.value_tell : elem.value_tell + elem.length]
            if len(value) != elem.length:
                raise _Unsupported
        elif not isinstance(value, bytes):
            raise _Unsupported
        undefined = elem.length == 0xFFFFFFFF
        if undefined and elem.tag == 0x7FE00010 and bytes(value[:4]) != _ITEM_TAG[self.little]:
            raise _Unsupported
        self._header(elem.tag, elem.VR, len(value), undefined)
        self.chunks.append(value)
        if undefined:
            self.chunks.append(_SEQUENCE_DELIMITER[self.little])

    def _binary(self, elem: DataElement) -> None:
        """pydicom's ``write_OBvalue``/``write_OWvalue``/``write_UN``, without copying the value."""
        value: bytes = elem.value
        undefined = elem.is_undefined_length
        if undefined and elem.tag == 0x7FE00010 and not value.startswith(_ITEM_TAG[self.little]):
            raise _Unsupported  # encapsulated pixel data must start with an item: pydicom raises
        padding = b"\x00" if len(value) % 2 and elem.VR != "UN" else b""
        self._header(elem.tag, elem.VR, len(value) + len(padding), undefined)
        self.chunks.append(value)
        if padding:
            self.chunks.append(padding)
        if undefined:
            self.chunks.append(_SEQUENCE_DELIMITER[self.little])

    def _sequence(self, elem: DataElement, encoding: Any) -> None:
        encodings = convert_encodings(encoding or [default_encoding])
        outer, self.chunks = self.chunks, []
        try:
            for item in elem.value or ():
                start = len(self.chunks)
                self.chunks.append(_ITEM[self.little])
                self.dataset(item, encodings)
                if getattr(item, "is_undefined_length_sequence_item", False):
                    self.chunks.append(_ITEM_DELIMITER[self.little])
                else:
                    size = sum(len(c) for c in self.chunks[start + 1 :])
                    self.chunks[start] = self.tag_length(0xFFFE, 0xE000, size)
            body = self.chunks
        finally:
            self.chunks = outer
        undefined = elem.is_undefined_length
        self._header(elem.tag, "SQ", sum(len(c) for c in body), undefined)
        self.chunks.extend(body)
        if undefined:
            self.chunks.append(_SEQUENCE_DELIMITER[self.little])
