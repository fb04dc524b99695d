"""Burned-in PHI text is found, redacted and re-verified on every transfer syntax and
photometric interpretation, encoded by real encoders (pydicom's RLE, CharLS, OpenJPEG; dcmtk's
libijg for the JPEG processes), and the stored output is OCR'd again here independently."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from governance.keys import ProjectKey
from imaging.burned_in_corpus import font_paths
from imaging.decoding import decode_pixels
from imaging.deid import Deidentifier, QuarantineError, load_profile
from imaging.deid.burned_in import TesseractEngine, find_tessdata, renders
from imaging.dicomio import encode_instance, parse_instance
from tests import dicom_factory

pytestmark = pytest.mark.skipif(find_tessdata() is None, reason="tesseract-ocr-eng is not installed")

SURNAME, PATIENT_ID = "HARTWELL", "58301927"
TEXT_BOX = (12, 10)  # where the name is drawn (x, y)
KEY = ProjectKey(bytes(range(32)))


def _glyphs(size: int = 26) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the name and the ID drawn in DejaVu Sans (matplotlib's font)."""
    font = ImageFont.truetype(str(font_paths()[0]), size)
    out = []
    for text in (SURNAME, f"ID {PATIENT_ID}"):
        canvas = Image.new("L", (240, size + 12), 0)
        ImageDraw.Draw(canvas).text((2, 2), text, fill=255, font=font)
        out.append(np.asarray(canvas) > 96)
    return out[0], out[1]


def _base(photometric: str, bits: int = 8) -> Dataset:
    """A 256x256 secondary-capture-like image with the name top left and the ID bottom left,
    on a smooth 'anatomy' disc, in ``photometric``."""
    rows = cols = 256
    yy, xx = np.mgrid[:rows, :cols]
    disc = ((yy - 150) ** 2 + (xx - 140) ** 2) < 70**2
    top = (1 << bits) - 1
    grey = np.where(disc, top * 0.45 + (xx % 32) * top / 400, top * 0.04)
    name, ident = _glyphs()
    text = np.zeros((rows, cols), bool)
    text[10 : 10 + name.shape[0], 12 : 12 + name.shape[1]] |= name
    text[210 : 210 + ident.shape[0], 12 : 12 + ident.shape[1]] |= ident
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture: quarantined before screening
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = f"{SURNAME}^TOBIAS", PATIENT_ID, "OT"
    ds.StudyDate = "20210304"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    dtype = np.uint8 if bits <= 8 else np.uint16
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        rgb = np.stack([grey, grey, grey], axis=-1)
        rgb[text] = (top, top, 0)  # yellow label
        pixels = rgb.astype(dtype)
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.PhotometricInterpretation = "RGB"
        if photometric != "RGB":
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, "RGB", "YBR_FULL")
            ds.PhotometricInterpretation = "YBR_FULL"
    elif photometric == "PALETTE COLOR":
        index = (grey * 200 / top).astype(np.uint8)
        index[text] = 255
        pixels = index
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "PALETTE COLOR"
        lut = (np.arange(256, dtype=np.uint16) * 257).tobytes()
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut)
    else:
        values = np.where(text, top, grey)
        if photometric == "MONOCHROME1":
            values = top - values  # white text is the lowest value
        pixels = values.astype(dtype)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits <= 8 else "OW"
    return ds


def _file(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _dcmtk(tool: str, flags: list[str], ds: Dataset, tmp: Path) -> Path:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (dcmtk) is not installed")
    source, target = _file(ds, tmp / "in.dcm"), tmp / "out.dcm"
    subprocess.run([tool, *flags, str(source), str(target)], check=True, capture_output=True)
    return target


def _deidentify(path: Path) -> tuple[Dataset, dict]:
    deid = Deidentifier(load_profile("research"), KEY)
    ds = parse_instance(path.read_bytes(), max_bytes=1 << 30)
    record = deid.deidentify(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = dcmread(BytesIO(encode_instance(ds)))
    assert record.pixel_screen is not None
    return out, record.pixel_screen


def _assert_clean(out: Dataset, screen: dict) -> None:
    assert screen["verified"] and screen["boxes_redacted"]
    assert out.BurnedInAnnotation == "NO"
    assert not out.file_meta.TransferSyntaxUID.is_compressed  # written back lossless
    # the name's box is covered by the redaction
    covered = np.zeros((out.Rows, out.Columns), bool)
    for x, y, w, h in screen["boxes_redacted"]:
        covered[y : y + h, x : x + w] = True
    name, _ = _glyphs()
    rows, cols = np.nonzero(name)  # the name's glyphs, drawn at (x 12, y 10)
    glyphs = covered[10 + rows.min() : 11 + rows.max(), 12 + cols.min() : 13 + cols.max()]
    assert glyphs.mean() >= 0.9
    # independent re-read: no line of the stored pixels shows the name or the ID
    engine = TesseractEngine()
    pixels = decode_pixels(out)
    frame = pixels[0] if int(out.get("NumberOfFrames", 1) or 1) > 1 else pixels
    if out.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        frame = apply_color_lut(frame, out)
    read = " ".join(
        line.text for render in renders(frame, out) for line in engine.read(render, timeout_ms=20000)
    )
    squeezed = read.upper().replace(" ", "")
    assert SURNAME not in squeezed and PATIENT_ID not in squeezed


def test_the_input_is_readable_before_cleaning() -> None:
    """The check below is meaningful: Tesseract reads the name in the uncleaned image."""
    ds = _base("MONOCHROME2")
    engine = TesseractEngine()
    text = " ".join(
        line.text for r in renders(decode_pixels(ds), ds) for line in engine.read(r, timeout_ms=20000)
    )
    assert SURNAME in text.upper().replace(" ", "")


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "PALETTE COLOR"])
def test_uncompressed_photometric_interpretations(photometric: str, tmp_path: Path) -> None:
    out, screen = _deidentify(_file(_base(photometric), tmp_path / "in.dcm"))
    _assert_clean(out, screen)
    if photometric == "PALETTE COLOR":
        assert out.PhotometricInterpretation == "PALETTE COLOR"


@pytest.mark.parametrize(
    "syntax,photometric",
    [
        (RLELossless, "MONOCHROME2"),
        (RLELossless, "RGB"),
        (JPEGLSLossless, "MONOCHROME2"),
        (JPEG2000Lossless, "RGB"),
    ],
)
def test_pydicom_encoders(syntax: str, photometric: str, tmp_path: Path) -> None:
    ds = _base(photometric, bits=12 if photometric.startswith("MONO") else 8)
    ds.compress(syntax, generate_instance_uid=False)
    out, screen = _deidentify(_file(ds, tmp_path / "in.dcm"))
    _assert_clean(out, screen)


@pytest.mark.parametrize(
    "flags,photometric,bits,lossy",
    [
        (["+eb"], "MONOCHROME2", 8, True),  # JPEG baseline (process 1)
        (["+eb"], "RGB", 8, True),  # baseline colour: stored as YBR_FULL_422
        (["+ee"], "MONOCHROME2", 12, True),  # JPEG extended (process 4), 12 bits
        (["+el"], "MONOCHROME2", 16, False),  # JPEG lossless (process 14)
        (["+e1"], "RGB", 8, False),  # JPEG lossless SV1
    ],
)
def test_dcmtk_jpeg_processes(
    flags: list[str], photometric: str, bits: int, lossy: bool, tmp_path: Path
) -> None:
    path = _dcmtk("dcmcjpeg", flags, _base(photometric, bits), tmp_path)
    source = dcmread(path, stop_before_pixels=True)
    if flags == ["+eb"] and photometric == "RGB":
        assert source.PhotometricInterpretation == "YBR_FULL_422"
    out, screen = _deidentify(path)
    _assert_clean(out, screen)
    if lossy:  # once lossy, always lossy (PS3.3 C.7.6.1.1.5)
        assert out.LossyImageCompression == "01"
        assert out.LossyImageCompressionMethod == "ISO_10918_1"


def test_dcmtk_jpeg_ls_near_lossless(tmp_path: Path) -> None:
    path = _dcmtk("dcmcjpls", ["+en"], _base("MONOCHROME2", 12), tmp_path)
    out, screen = _deidentify(path)
    _assert_clean(out, screen)
    assert out.LossyImageCompression == "01"


def test_dcmtk_rle(tmp_path: Path) -> None:
    path = _dcmtk("dcmcrle", [], _base("RGB"), tmp_path)  # RLE from dcmtk's own encoder
    out, screen = _deidentify(path)
    _assert_clean(out, screen)


def test_ybr_full_422_uncompressed(tmp_path: Path) -> None:
    """Native YBR_FULL_422 (two lumas share one chroma pair, as ultrasound devices write it)."""
    ds = _base("YBR_FULL")
    ybr = np.frombuffer(ds.PixelData, np.uint8).reshape(256, 256, 3).astype(np.uint16)
    pairs = ybr.reshape(256, 128, 2, 3)
    packed = np.stack(
        [
            pairs[:, :, 0, 0],
            pairs[:, :, 1, 0],
            pairs[:, :, :, 1].mean(axis=2),
            pairs[:, :, :, 2].mean(axis=2),
        ],
        axis=-1,
    ).astype(np.uint8)
    ds.PixelData = packed.tobytes()
    ds.PhotometricInterpretation = "YBR_FULL_422"
    out, screen = _deidentify(_file(ds, tmp_path / "in.dcm"))
    _assert_clean(out, screen)
    assert out.PhotometricInterpretation == "RGB"


def test_multi_frame_cine_every_frame_redacted(tmp_path: Path) -> None:
    ds = _base("RGB")
    frame = np.frombuffer(ds.PixelData, np.uint8).reshape(256, 256, 3)
    frames = np.stack([frame] * 8)  # a static overlay, as cine devices print it
    ds.NumberOfFrames = len(frames)
    ds.PixelData = frames.tobytes()
    out, screen = _deidentify(_file(ds, tmp_path / "in.dcm"))
    _assert_clean(out, screen)
    cleaned = decode_pixels(out)
    assert cleaned.shape[0] == 8
    name, _ = _glyphs()
    for index in range(8):  # the name's glyphs are black in every frame, sampled or not
        region = cleaned[index, 10 : 10 + name.shape[0], 12 : 12 + name.shape[1]].max(axis=-1)
        assert (region[name] == 0).mean() >= 0.95


def test_strict_profile_keeps_the_old_modality_rule(tmp_path: Path) -> None:
    ds = _base("RGB")
    ds.Modality = "US"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.6.1")
    deid = Deidentifier(load_profile("strict"), KEY)
    parsed = parse_instance(_file(ds, tmp_path / "in.dcm").read_bytes(), max_bytes=1 << 30)
    with pytest.raises(QuarantineError) as caught:
        deid.deidentify(parsed)
    assert caught.value.reason.value == "burned_in_risk"


def test_big_endian_palette_is_written_back_big_endian() -> None:
    """A data set read big endian cannot be re-encoded little endian by pydicom's writer: the
    cleaned pixels are stored in Explicit VR Big Endian (retired, lossless), not quarantined."""
    path = Path(dicom_factory.pydicom_file("OBXXXX1A_expb.dcm"))
    out, screen = _deidentify(path)
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    assert screen["verified"]
    if screen["boxes_redacted"]:
        x, y, w, h = screen["boxes_redacted"][0]
        cleaned = decode_pixels(out)
        assert len(set(cleaned[y : y + h, x : x + w].ravel().tolist())) == 1  # one fill value
