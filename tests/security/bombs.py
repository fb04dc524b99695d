"""Compression bombs for the attack tests: real DICOM headers (pydicom's CT_small.dcm, new
UIDs) over a Deflated Explicit VR Little Endian data set whose pixel data inflates to
gigabytes. DEFLATE cannot compress better than about 1032:1, so 4 GiB of inflated data take
about 4 MiB on the wire; the stream is built from one compressed block of zeros repeated
(each block ends with a full flush, so every copy inflates the same)."""

from __future__ import annotations

import struct
import zlib

__all__ = ["deflate_bomb"]

_MIB = 1024 * 1024


def _header(rows: int, columns: int) -> tuple[bytes, bytes, str, str]:
    """(file meta group bytes, data set bytes without pixel data, SOP class, SOP instance)."""
    from pydicom import dcmread
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    from tests.dicom_factory import pydicom_file

    ds = dcmread(pydicom_file("CT_small.dcm"))
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta_buffer = DicomBytesIO()
    meta_buffer.is_little_endian, meta_buffer.is_implicit_VR = True, False
    write_file_meta_info(meta_buffer, meta, enforce_standard=True)
    return meta_buffer.getvalue(), body.getvalue(), str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def deflate_bomb(inflated_pixel_bytes: int = 0xFFFFFFFE, rows: int = 128, columns: int = 128) -> bytes:
    """A Part 10 file declaring a ``rows`` x ``columns`` 16-bit image whose (deflated) pixel
    data element holds ``inflated_pixel_bytes`` zeros (at most 0xFFFFFFFE, a 32-bit length)."""
    meta, body, _, _ = _header(rows, columns)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pixel_header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, inflated_pixel_bytes)
    head = compressor.compress(body + pixel_header) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(b"\0" * _MIB) + compressor.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(inflated_pixel_bytes, _MIB)
    tail = compressor.compress(b"\0" * rest) + compressor.flush()
    return b"".join((b"\0" * 128, b"DICM", meta, head, block * full, tail))
