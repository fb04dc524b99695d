"""imaging.results: windowing, overlay blending, reviewer PNG, DICOM Secondary Capture (dciodvfy)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from imaging.results import (
    AlgorithmIdentity,
    OverlayCaption,
    OverlayError,
    ResultImageError,
    SecondaryCaptureError,
    blend_overlay,
    build_overlay_secondary_capture,
    display_image,
    linear_window,
    patient_orientation_of,
    render_overlay_png,
    write_overlay_png,
    write_secondary_capture,
)

DCIODVFY = shutil.which("dciodvfy")
ALGORITHM = AlgorithmIdentity(name="chest-opacity", version="7", method="Grad-CAM")


def _source(name: str = "CT_small.dcm") -> Dataset:
    path = get_testdata_file(name)
    assert path is not None
    return pydicom.dcmread(path)


def _map(shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    heat = np.zeros(shape, dtype=np.float32)
    heat[2:6, 3:8] = 1.0
    return heat


def _dciodvfy(path: Path) -> tuple[int, list[str]]:
    assert DCIODVFY is not None
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode, [line for line in lines if line.startswith("Error")]


def test_results_linear_window_follows_ps33_formula() -> None:
    values = np.array([-1000.0, 39.5, 40.0, 240.0, 3000.0], dtype=np.float32)
    windowed = linear_window(values, center=40.0, width=400.0)
    assert windowed[0] == 0.0 and windowed[-1] == 1.0
    assert windowed[2] == pytest.approx(0.5 + 0.5 / 399, abs=1e-6)
    assert windowed[3] == 1.0


def test_results_display_uses_header_window_and_inverts_monochrome1() -> None:
    ds = _source()
    ds.WindowCenter, ds.WindowWidth = 40, 400
    shown = display_image(ds)
    assert shown.pixels.shape == (ds.Rows, ds.Columns)
    assert float(shown.pixels.min()) >= 0.0 and float(shown.pixels.max()) <= 1.0
    assert shown.window_description == "W 400 / C 40"
    ds.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(display_image(ds).pixels, 1.0 - shown.pixels, atol=1e-6)
    explicit = display_image(ds, window=(0.0, 100.0))
    assert explicit.window_description == "W 100 / C 0"


def test_results_display_rejects_missing_pixels_and_bad_frames() -> None:
    ds = _source()
    with pytest.raises(ResultImageError):
        display_image(ds, frame=3)
    del ds.PixelData
    with pytest.raises(ResultImageError):
        display_image(ds)


def test_results_blend_colours_only_above_threshold() -> None:
    image = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    rgb = blend_overlay(image, _map(), threshold=0.2)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    grey = np.round(image * 255).astype(np.uint8)
    # Far from the hot block the pixels are the untouched grey image.
    assert np.array_equal(rgb[28:, 28:, 0], grey[28:, 28:])
    assert np.array_equal(rgb[28:, 28:, 0], rgb[28:, 28:, 2])
    assert not np.array_equal(rgb[6:10, 8:14, 0], rgb[6:10, 8:14, 2])  # coloured where hot
    with pytest.raises(OverlayError):
        blend_overlay(image, _map(), max_alpha=2.0)


def test_results_png_has_caption_and_is_a_png(tmp_path: Path) -> None:
    caption = OverlayCaption("chest-opacity", "7", "Grad-CAM", "opacity", 0.875, "approved", "W 400 / C 40")
    assert caption.lines() == [
        "chest-opacity v7 | Grad-CAM | approval: approved",
        "explains: opacity | p = 0.875 | window: W 400 / C 40",
    ]
    image = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    data = render_overlay_png(image, _map(), caption)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    path = write_overlay_png(tmp_path / "sub" / "overlay.png", image, _map(), caption)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_results_secondary_capture_is_derived_and_names_the_model(name: str, tmp_path: Path) -> None:
    source = _source(name)
    shown = display_image(source)
    rgb = blend_overlay(shown.pixels, _map())
    sc = build_overlay_secondary_capture(source, rgb, ALGORITHM, comments="summary text")
    path = write_secondary_capture(sc, tmp_path / "overlay.dcm")
    written = pydicom.dcmread(path)
    assert written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert written.StudyInstanceUID == source.StudyInstanceUID
    assert written.SeriesInstanceUID != source.SeriesInstanceUID
    assert written.SOPInstanceUID != source.SOPInstanceUID
    assert written.PatientID == source.PatientID
    assert list(written.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert written.PhotometricInterpretation == "RGB" and written.Rows == source.Rows
    reference = written.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    ours = [item for item in written.ContributingEquipmentSequence if item.Manufacturer == "RadGate"]
    assert len(ours) == 1
    assert ours[0].ManufacturerModelName == "chest-opacity" and ours[0].SoftwareVersions == "7"
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
    assert "chest-opacity v7" in written.SeriesDescription
    assert written.ImageComments == "summary text"
    assert written.BurnedInAnnotation == "NO"
    assert list(written.PixelSpacing) == list(source.PixelSpacing)
    np.testing.assert_array_equal(written.pixel_array, rgb)


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm"])
def test_results_secondary_capture_passes_dciodvfy(name: str, tmp_path: Path) -> None:
    source = _source(name)
    shown = display_image(source, frame=0)
    rgb = blend_overlay(shown.pixels, _map())
    frames = int(source.get("NumberOfFrames", 1) or 1)
    sc = build_overlay_secondary_capture(source, rgb, ALGORITHM, frame=1 if frames > 1 else None)
    code, errors = _dciodvfy(write_secondary_capture(sc, tmp_path / "overlay.dcm"))
    assert errors == [] and code == 0


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_results_secondary_capture_of_demo_radiograph_passes_dciodvfy(tmp_path: Path) -> None:
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(tmp_path / "demo", patients=1, images_per_patient=1, size=32)
    source = pydicom.dcmread(demo.files[0])
    rgb = blend_overlay(display_image(source).pixels, _map())
    sc = build_overlay_secondary_capture(source, rgb, ALGORITHM)
    assert "Laterality" not in sc  # CHEST is unpaired; the source's ImageLaterality is U
    assert list(sc.PatientOrientation) == list(source.PatientOrientation)
    code, errors = _dciodvfy(write_secondary_capture(sc, tmp_path / "overlay.dcm"))
    assert errors == [] and code == 0


def test_results_secondary_capture_rejects_bad_input() -> None:
    source = _source()
    with pytest.raises(SecondaryCaptureError):
        build_overlay_secondary_capture(source, np.zeros((8, 8), dtype=np.uint8), ALGORITHM)
    del source.StudyInstanceUID
    with pytest.raises(SecondaryCaptureError):
        build_overlay_secondary_capture(source, np.zeros((8, 8, 3), dtype=np.uint8), ALGORITHM)


def test_results_patient_orientation_from_header_or_direction_cosines() -> None:
    ds = Dataset()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # axial
    assert patient_orientation_of(ds) == ("L", "P")
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    assert patient_orientation_of(ds) == ("P", "F")
    ds.PatientOrientation = ["R", "F"]
    assert patient_orientation_of(ds) == ("R", "F")
    assert patient_orientation_of(Dataset()) is None
