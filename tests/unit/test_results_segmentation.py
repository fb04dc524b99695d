"""imaging.results.segmentation: DICOM SEG + volumetric SR of a label volume; geometry round trip;
both pass dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import cast

import highdicom as hd
import numpy as np
import pydicom
import pytest

from imaging.results import AlgorithmIdentity
from imaging.results.segmentation import (
    SegmentationResultError,
    build_segmentation,
    build_segmentation_results,
    structure_code,
)
from tests.seg_series import blob_labels, make_series

ALGORITHM = AlgorithmIdentity(name="brain-seg", version="4", method="segmentation")
STRUCTURES = {1: "Hippocampus_L", 2: "lesion core"}


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_segmentation_round_trip_aligns_each_frame_with_its_source_slice(tmp_path: Path) -> None:
    sources, labels = blob_labels(make_series(slices=10, size=24, seed=3))
    labels[0] = 0  # an empty slice: its frames are omitted, the others keep their own source
    seg, sr = build_segmentation_results(
        sources, labels, STRUCTURES, {"Hippocampus_L": 1.25, "lesion core": 0.5}, ALGORITHM
    )
    seg.save_as(tmp_path / "seg.dcm")
    sr.save_as(tmp_path / "sr.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    assert back.StudyInstanceUID == sources[0].StudyInstanceUID
    assert back.SeriesInstanceUID != sources[0].SeriesInstanceUID
    assert back.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    by_uid = {str(s.SOPInstanceUID): z for z, s in enumerate(sources)}
    pixels = back.pixel_array  # (frames, rows, cols), binary
    seen: set[tuple[int, int]] = set()
    for index, frame in enumerate(back.PerFrameFunctionalGroupsSequence):
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source_ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        z = by_uid[str(source_ref.ReferencedSOPInstanceUID)]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in sources[z].ImagePositionPatient])
        np.testing.assert_array_equal(pixels[index], (labels[z] == segment).astype(pixels.dtype))
        seen.add((z, segment))
    expected = {(int(z), int(k)) for k in STRUCTURES for z in np.unique(np.nonzero(labels == k)[0])}
    assert seen == expected and all(z != 0 for z, _ in seen)
    # The same result through highdicom's own per-instance reader.
    for z in (3, 5):
        by_source = back.get_pixels_by_source_instance(
            [str(sources[z].SOPInstanceUID)], segment_numbers=[1, 2], combine_segments=True
        )
        np.testing.assert_array_equal(by_source[0], labels[z])
    description = back.get_segment_description(1)
    assert description.segmented_property_type.value == "5366008"  # SCT Hippocampus
    assert description.algorithm_identification is not None
    assert description.algorithm_identification[0].AlgorithmName == "brain-seg"
    assert back.get_segment_description(2).segmented_property_type.scheme_designator == "99RADGATE"
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(tmp_path / "seg.dcm") == []
        assert _dciodvfy_errors(tmp_path / "sr.dcm") == []


def test_volume_report_states_each_volume_and_its_segment(tmp_path: Path) -> None:
    sources, labels = blob_labels(make_series(slices=8, size=16, seed=4))
    seg, sr = build_segmentation_results(
        sources, labels, STRUCTURES, {"Hippocampus_L": 3.5, "lesion core": 0.0}, ALGORITHM
    )
    sr.save_as(tmp_path / "sr.dcm")
    report = hd.sr.srread(tmp_path / "sr.dcm")
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    groups = cast(hd.sr.MeasurementReport, report.content).get_volumetric_roi_measurement_groups()
    found = {}
    for group in groups:
        (measurement,) = group.get_measurements()
        assert measurement.name.meaning == "Volume" and measurement.unit.value == "ml"
        segment = group.referenced_segment
        assert segment is not None and segment.referenced_segment_numbers is not None
        (number,) = segment.referenced_segment_numbers
        assert segment.referenced_sop_instance_uid == str(seg.SOPInstanceUID)
        source_series = segment.source_series_for_segmentation
        assert source_series is not None and source_series.value == str(sources[0].SeriesInstanceUID)
        found[int(number)] = measurement.value
    assert found == {1: pytest.approx(3.5), 2: pytest.approx(0.0)}
    evidence = {
        str(ref.ReferencedSOPInstanceUID)
        for study in report.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert str(seg.SOPInstanceUID) in evidence and str(sources[0].SOPInstanceUID) in evidence


def test_segmentation_inputs_are_checked() -> None:
    sources, labels = blob_labels(make_series(slices=6, size=16, seed=5))
    with pytest.raises(SegmentationResultError, match="do not match 5 source slices"):
        build_segmentation(sources[:5], labels, STRUCTURES, ALGORITHM)
    with pytest.raises(SegmentationResultError, match="no structure name"):
        build_segmentation(sources, labels, {1: "only one"}, ALGORITHM)
    other = make_series(slices=6, size=16, seed=6)
    mixed = [*sources[:3], *other[:3]]
    with pytest.raises(SegmentationResultError, match="more than one series"):
        build_segmentation(mixed, labels, STRUCTURES, ALGORITHM)
    broken = [pydicom.Dataset(s) for s in sources]
    del broken[2].FrameOfReferenceUID
    with pytest.raises(SegmentationResultError, match="FrameOfReferenceUID"):
        build_segmentation(broken, labels, STRUCTURES, ALGORITHM)


def test_structure_codes() -> None:
    category, kind = structure_code("left thalamus")
    assert (category.value, kind.value, kind.scheme_designator) == ("91723000", "42695009", "SCT")
    assert structure_code("Caudate_Nucleus_R")[1].value == "11000004"
    assert structure_code("tumour")[1].scheme_designator == "99RADGATE"


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), (0.8660254, 0.5, 0, -0.5, 0.8660254, 0)],
    ids=["axial", "sagittal", "rotated"],
)
def test_volume_labels_seg_read_back_on_the_same_grid(tmp_path: Path, orientation: tuple[float, ...]) -> None:
    """Series (any order, any orientation) -> Volume -> labels -> SEG -> read back: each frame sits
    on its source slice (SOP Instance UID and position), and imaging.volumes reads the SEG back
    onto the volume's grid unchanged."""
    from imaging.volumes import assemble_series, read_label_volume

    series = make_series(slices=9, size=20, seed=7, orientation=orientation)  # type: ignore[arg-type]
    volume = assemble_series(series)
    _, labels = blob_labels(series)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series}
    sources = [by_uid[uid] for uid in volume.sop_instance_uids]
    seg = build_segmentation(sources, labels, STRUCTURES, ALGORITHM)
    seg.save_as(tmp_path / "seg.dcm")
    back = hd.seg.segread(tmp_path / "seg.dcm")
    index = {uid: z for z, uid in enumerate(volume.sop_instance_uids)}
    for number, frame in enumerate(back.PerFrameFunctionalGroupsSequence):
        z = index[str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx(list(volume.slice_position(z)), abs=1e-3)
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(back.pixel_array[number], labels[z] == segment)
    np.testing.assert_array_equal(read_label_volume(tmp_path / "seg.dcm", volume), labels)


def test_slices_not_a_multiple_of_8_pixels_give_a_fractional_seg(tmp_path: Path) -> None:
    """Bit-packed BINARY frames of 42 x 42 pixels would not start on a byte (OHIF 3 draws such
    frames garbled): the SEG is FRACTIONAL OCCUPANCY holding 0 or its maximum, valid, and reads
    back the same labels. Slices of a multiple of 8 pixels stay BINARY."""
    from imaging.volumes import assemble_series, read_label_volume

    series = make_series(slices=8, size=42, seed=8)
    volume = assemble_series(series)
    _, labels = blob_labels(series)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series}
    sources = [by_uid[uid] for uid in volume.sop_instance_uids]
    seg = build_segmentation(sources, labels, STRUCTURES, ALGORITHM)
    assert (seg.SegmentationType, seg.SegmentationFractionalType, seg.BitsAllocated) == (
        "FRACTIONAL",
        "OCCUPANCY",
        8,
    )
    assert set(np.unique(seg.pixel_array).tolist()) == {0, int(seg.MaximumFractionalValue)}
    seg.save_as(tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_label_volume(tmp_path / "seg.dcm", volume), labels)
    if shutil.which("dciodvfy"):
        assert _dciodvfy_errors(tmp_path / "seg.dcm") == []
    aligned, aligned_labels = blob_labels(make_series(slices=8, size=40, seed=8))
    assert build_segmentation(aligned, aligned_labels, STRUCTURES, ALGORITHM).SegmentationType == "BINARY"
