"""IHE AI Results: the classification SR and the saliency SEG read back with highdicom, dciodvfy-clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
import pytest

from imaging.results import (
    RADGATE_SCHEME,
    AlgorithmIdentity,
    ModelApproval,
    SaliencySegmentationError,
    build_result_report,
    build_saliency_segmentation,
    write_secondary_capture,
)
from tests.dicom_factory import pydicom_file

ALGORITHM = AlgorithmIdentity(name="chest-opacity", version="7", method="Grad-CAM")
APPROVAL = ModelApproval(model_version="7", artifact_sha256="ab" * 32, status="approved", alias="production")


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def dx(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    from imaging.demo_data import write_demo_studies

    files = write_demo_studies(
        tmp_path_factory.mktemp("air"), patients=1, images_per_patient=1, size=64
    ).files
    return pydicom.dcmread(files[0])


@pytest.mark.parametrize("positive", [True, False])
def test_air_report_reads_back_with_highdicom(tmp_path: Path, positive: bool) -> None:
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    report = build_result_report(
        source, ALGORITHM, finding="opacity", probability=0.8731, approval=APPROVAL, positive=positive
    )
    path = write_secondary_capture(report, tmp_path / "sr.dcm")
    sr = hd.sr.srread(path)
    (group,) = cast(Any, sr.content).get_image_measurement_groups()
    assert group.finding_type.value == "opacity" and group.finding_type.scheme_designator == RADGATE_SCHEME
    (evaluation,) = group.get_qualitative_evaluations()
    assert evaluation.name.value == "opacity"
    assert (evaluation.value.value, evaluation.value.scheme_designator) == (
        ("52101004", "SCT") if positive else ("2667000", "SCT")
    )
    (measurement,) = group.get_measurements()
    assert measurement.value == pytest.approx(0.8731) and measurement.name.value == "PROB"
    assert [image.referenced_sop_instance_uid for image in group.source_images] == [source.SOPInstanceUID]
    texts = [
        str(item.TextValue)
        for item in _walk(pydicom.dcmread(path).ContentSequence)
        if item.ValueType == "TEXT"
    ]
    assert "chest-opacity" in texts and "7" in texts  # TID 4019 name, version
    assert f"artifact sha256: {'ab' * 32}" in texts and "approval: approved (alias production)" in texts
    written = pydicom.dcmread(path)
    device = [
        i
        for i in _walk(written.ContentSequence)
        if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == "121013"
    ]
    assert device, "device observer name (TID 1004) missing"
    serials = [
        i for i in _walk(written.ContentSequence) if i.ConceptNameCodeSequence[0].CodeValue == "121016"
    ]
    assert [str(s.TextValue) for s in serials] == ["ab" * 8]
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(path) == []


def test_saliency_segmentation_overlays_the_source(tmp_path: Path, dx: pydicom.Dataset) -> None:
    heat = np.zeros((int(dx.Rows), int(dx.Columns)))
    heat[10:30, 20:40] = 3.0  # any range: scaled to 0-1
    seg = build_saliency_segmentation(dx, heat, ALGORITHM, finding="opacity", approval=APPROVAL)
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    back = hd.seg.segread(path)
    assert back.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    assert back.StudyInstanceUID == dx.StudyInstanceUID and back.SeriesInstanceUID != dx.SeriesInstanceUID
    (uids,) = back.get_source_image_uids()
    assert uids[2] == dx.SOPInstanceUID
    pixels = back.get_pixels_by_source_instance([dx.SOPInstanceUID])
    assert pixels.shape == (1, dx.Rows, dx.Columns, 1)
    assert pixels[0, 15, 25, 0] == pytest.approx(1.0) and pixels[0, 50, 5, 0] == 0.0
    described = back.get_segment_description(1)
    assert described.segmented_property_type.value == "opacity"
    assert back.DeviceSerialNumber == "ab" * 8 and back.SoftwareVersions == "7"
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(path) == []


def test_saliency_segmentation_refuses_a_wrong_map(dx: pydicom.Dataset) -> None:
    with pytest.raises(SaliencySegmentationError, match="shape"):
        build_saliency_segmentation(dx, np.zeros((3, 3)), ALGORITHM, finding="opacity")
    bad = np.zeros((int(dx.Rows), int(dx.Columns)))
    bad[0, 0] = np.nan
    with pytest.raises(SaliencySegmentationError, match="NaN"):
        build_saliency_segmentation(dx, bad, ALGORITHM, finding="opacity")


def _walk(items: pydicom.Sequence) -> list[pydicom.Dataset]:
    found = []
    for item in items:
        found.append(item)
        found.extend(_walk(item.get("ContentSequence", [])))
    return found


def test_attention_region_is_a_planar_roi_on_the_source(tmp_path: Path, dx: pydicom.Dataset) -> None:
    from imaging.results import StructuredReportError, attention_region

    heat = np.zeros((int(dx.Rows), int(dx.Columns)))
    heat[10:30, 20:40] = 1.0
    region = attention_region(heat)
    assert region is not None and region.tolist()[:3] == [[20, 10], [40, 10], [40, 30]]
    assert attention_region(np.ones((4, 4))) is None  # a flat map points nowhere
    report = build_result_report(
        dx, ALGORITHM, finding="opacity", probability=0.7, positive=True, approval=APPROVAL, region=region
    )
    path = write_secondary_capture(report, tmp_path / "sr.dcm")
    sr = hd.sr.srread(path)
    assert sr.SeriesDescription == "AI: opacity present (p=0.70), chest-opacity v7"
    (roi,) = cast(Any, sr.content).get_planar_roi_measurement_groups()
    assert roi.finding_type.value == "opacity"
    assert roi.roi.value.tolist()[0] == [20.0, 10.0] and len(roi.roi.value) == 5  # closed
    assert roi.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dx.SOPInstanceUID
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(path) == []
    with pytest.raises(StructuredReportError, match="on the source image"):
        build_result_report(dx, ALGORITHM, finding="opacity", probability=0.7, region=region + 1000)
