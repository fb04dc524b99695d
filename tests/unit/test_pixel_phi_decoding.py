"""The bounded pixel decoder: declared sizes against the cap, codestream headers against the
declared size (a tiny frame promising gigabytes), and the quarantine reasons de-identification
gives each failure. Messages carry sizes, never values."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEG2000Lossless, JPEGBaseline8Bit, RLELossless, generate_uid

from governance.keys import ProjectKey
from imaging.decoding import (
    DecompressionLimitError,
    PixelDecodeError,
    UnsupportedSyntaxError,
    decode_pixels,
    estimate_decoded_bytes,
)
from imaging.deid import Deidentifier, QuarantineError, load_profile
from imaging.dicomio import encode_instance, parse_instance
from tests import dicom_factory  # as a module: pytest would collect a test* name imported here

KEY = ProjectKey(bytes(range(32)))


def _image(syntax: str, frames: list[bytes], rows: int = 8, cols: int = 8, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "DOE^JANE", "PID77", "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation, ds.PhotometricInterpretation = bits - 1, 0, "MONOCHROME2"
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    return ds


def _jpeg_bomb(rows: int, cols: int) -> bytes:
    """SOI + a baseline SOF0 declaring rows x cols x 3, and nothing a decoder could use."""
    sof = struct.pack(">HBHHB", 17, 8, rows, cols, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xc0" + sof + b"\xff\xd9"


def _j2k_bomb(rows: int, cols: int) -> bytes:
    """SOC + a SIZ marker declaring rows x cols, one 16-bit component."""
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, cols, rows, 0, 0, cols, rows, 0, 0, 1) + b"\x0f\x01\x01"
    return b"\xff\x4f\xff\x51" + siz + b"\xff\xd9"


def test_estimate_follows_the_declared_attributes() -> None:
    ds = _image(JPEGBaseline8Bit, [b"\x00\x00"] * 3, rows=10, cols=20, bits=16)
    assert estimate_decoded_bytes(ds) == 10 * 20 * 3 * 2


def test_declared_size_over_the_cap_is_refused_before_decoding() -> None:
    ds = _image(RLELossless, [b"\x00" * 64], rows=60000, cols=60000, bits=16)
    with pytest.raises(DecompressionLimitError) as caught:
        decode_pixels(ds, max_bytes=1 << 30)
    assert "7200000000" in str(caught.value) and "DOE" not in str(caught.value)


@pytest.mark.parametrize("bomb", [_jpeg_bomb, _j2k_bomb])
def test_codestream_promising_more_than_declared_is_refused(bomb: object) -> None:
    syntax = JPEGBaseline8Bit if bomb is _jpeg_bomb else JPEG2000Lossless
    ds = _image(syntax, [bomb(50000, 50000)])  # type: ignore[operator]
    with pytest.raises(DecompressionLimitError):
        decode_pixels(ds)


def test_pydicom_test_file_with_a_7_terabyte_siz_is_refused() -> None:
    ds = dcmread(dicom_factory.pydicom_file("JPEG2000-embedded-sequence-delimiter.dcm"))
    with pytest.raises(DecompressionLimitError):
        decode_pixels(ds)


def test_corrupt_and_unsupported_data() -> None:
    with pytest.raises(PixelDecodeError):
        decode_pixels(_image(JPEGBaseline8Bit, [b"\xff\xd8" + b"\x00" * 30]))
    mpeg = _image("1.2.840.10008.1.2.4.100", [b"\x00\x00\x01\xb3" + b"\x00" * 60])
    with pytest.raises(UnsupportedSyntaxError):
        decode_pixels(mpeg)


def test_real_compressed_files_decode_as_pydicom_does() -> None:
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPGExtended.dcm",
    ):
        ds = dcmread(dicom_factory.pydicom_file(name))
        np.testing.assert_array_equal(decode_pixels(ds), ds.pixel_array)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([_jpeg_bomb(40000, 40000)], "pixel_decode_limit"),
        ([b"\xff\xd8" + b"\x00" * 30], "pixel_undecodable"),
    ],
)
def test_deidentification_quarantines_with_a_specific_reason(
    frames: list[bytes], reason: str, tmp_path: Path
) -> None:
    ds = _image(JPEGBaseline8Bit, frames)
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    parsed = parse_instance(path.read_bytes(), max_bytes=1 << 30)
    with pytest.raises(QuarantineError) as caught:
        Deidentifier(load_profile("research"), KEY).deidentify(parsed)
    assert caught.value.reason.value == reason
    assert "DOE" not in str(caught.value) and "PID77" not in str(caught.value)


def test_unsupported_syntax_is_quarantined(tmp_path: Path) -> None:
    ds = _image("1.2.840.10008.1.2.4.100", [b"\x00\x00\x01\xb3" + b"\x00" * 60])  # MPEG2 video
    ds.Modality = "ES"
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    parsed = parse_instance(path.read_bytes(), max_bytes=1 << 30)
    with pytest.raises(QuarantineError) as caught:
        Deidentifier(load_profile("research"), KEY).deidentify(parsed)
    assert caught.value.reason.value == "pixel_unsupported_syntax"


def test_clean_image_passes_and_is_marked_after_screening(tmp_path: Path) -> None:
    """No text: nothing redacted, the original syntax kept, BurnedInAnnotation NO (screened)."""
    ds = dcmread(dicom_factory.pydicom_file("MR_small_RLE.dcm"))
    ds.Modality = "US"  # a modality the strict rule quarantines unread
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    parsed = parse_instance(path.read_bytes(), max_bytes=1 << 30)
    record = Deidentifier(load_profile("research"), KEY).deidentify(parsed)
    encode_instance(parsed)
    assert record.pixel_screen is not None and record.pixel_screen["verified"]
    assert parsed.BurnedInAnnotation == "NO"
    assert parsed.file_meta.TransferSyntaxUID == RLELossless
