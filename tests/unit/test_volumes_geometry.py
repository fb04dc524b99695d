"""Series -> volume geometry: sorting, spacing from positions, gaps, mixed slices, oblique
stacks, DICOM round trip, labels on the series grid."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset

from imaging.volumes import (
    GeometryIssueKind,
    LabelAlignmentError,
    SeriesGeometryError,
    Volume,
    assemble_series,
    group_series,
    read_label_volume,
    series_datasets,
    write_nifti,
)
from imaging.volumes.volume import LPS_TO_RAS

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _oblique() -> tuple[float, float, float, float, float, float]:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    row, col = r[:, 0], r[:, 1]
    return (*(float(v) for v in row), *(float(v) for v in col))  # type: ignore[return-value]


def _volume(orientation: tuple[float, ...] = AXIAL, shape: tuple[int, int, int] = (7, 5, 6)) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(
        array=rng.integers(0, 4000, size=shape).astype(np.float32),
        spacing=(2.5, 0.8, 1.1),
        origin=(-40.25, 12.5, 100.0),
        orientation=orientation,  # type: ignore[arg-type]
        study_instance_uid="2.25.1",
        series_instance_uid="2.25.2",
        frame_of_reference_uid="2.25.3",
    )


def _template() -> Dataset:
    ds = Dataset()
    ds.Modality = "MR"
    ds.PatientID = "X"
    return ds


def _equal_geometry(a: Volume, b: Volume) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=1e-5)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-5)
    np.testing.assert_allclose(a.orientation, b.orientation, atol=1e-7)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)


@pytest.mark.parametrize("orientation", [AXIAL, _oblique()], ids=["axial", "oblique"])
def test_round_trip_shuffled_files_give_the_same_volume(
    tmp_path: Path, orientation: tuple[float, ...]
) -> None:
    source = _volume(orientation)
    datasets = series_datasets(source, _template())
    paths = []
    for k, ds in enumerate(datasets):
        path = tmp_path / f"{(k * 5) % 7}-{k}.dcm"  # file order != slice order
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    random.Random(1).shuffle(paths)
    assert list(group_series(paths)) == ["2.25.2"]
    volume = assemble_series(paths)
    assert volume.geometry.ok and volume.shape == source.shape
    np.testing.assert_array_equal(volume.array, source.array)
    _equal_geometry(volume, source)
    assert volume.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in datasets)
    # affine of voxel (0, 0, k) is slice k's ImagePositionPatient
    for k, ds in enumerate(datasets):
        np.testing.assert_allclose(
            volume.affine @ [0, 0, k, 1], [*map(float, ds.ImagePositionPatient), 1], atol=1e-5
        )


def test_spacing_comes_from_positions_and_rescale_is_applied() -> None:
    source = _volume()
    datasets = series_datasets(source, _template())
    for ds in datasets:
        ds.SliceThickness = "9"  # wrong on purpose: spacing must come from the positions
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1024"
    volume = assemble_series(reversed(datasets))
    assert volume.spacing[0] == pytest.approx(2.5)
    np.testing.assert_allclose(volume.array, source.array * 2 - 1024)


def test_gap_is_detected_and_refused_without_phi() -> None:
    datasets = series_datasets(_volume(), _template())
    for ds in datasets:
        ds.PatientName = "DOE^JANE"
    del datasets[3]
    with pytest.raises(SeriesGeometryError) as caught:
        assemble_series(datasets)
    assert GeometryIssueKind.GAP in caught.value.report.kinds()
    assert "gap" in str(caught.value) and "2.25" not in str(caught.value) and "DOE" not in str(caught.value)


def test_mixed_orientation_and_size_are_refused() -> None:
    datasets = series_datasets(_volume(), _template())
    datasets[2].ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    with pytest.raises(SeriesGeometryError) as caught:
        assemble_series(datasets)
    assert GeometryIssueKind.MIXED_ORIENTATION in caught.value.report.kinds()
    other = series_datasets(_volume(shape=(7, 5, 5)), _template())
    with pytest.raises(SeriesGeometryError) as caught:
        assemble_series([*series_datasets(_volume(), _template())[:3], other[3]])
    assert GeometryIssueKind.MIXED_SIZE in caught.value.report.kinds()


def test_duplicates_dropped_and_missing_pixels_reported() -> None:
    datasets = series_datasets(_volume(), _template())
    volume = assemble_series([*datasets, datasets[4]])
    assert volume.shape[0] == 7 and volume.geometry.kinds() == {GeometryIssueKind.DUPLICATE_POSITION}
    del datasets[0].PixelData
    with pytest.raises(SeriesGeometryError) as caught:
        assemble_series(datasets)
    assert GeometryIssueKind.MISSING_PIXEL_DATA in caught.value.report.kinds()
    with pytest.raises(SeriesGeometryError, match="no_slices"):
        assemble_series([])


def test_tilted_stack_is_refused() -> None:
    datasets = series_datasets(_volume(), _template())
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [str(x), str(y + 0.5 * k), str(z)]  # drifts in-plane: gantry tilt
    with pytest.raises(SeriesGeometryError) as caught:
        assemble_series(datasets)
    assert GeometryIssueKind.TILTED in caught.value.report.kinds()


@pytest.mark.parametrize("orientation", [AXIAL, _oblique()], ids=["axial", "oblique"])
def test_nifti_labels_align_in_any_axis_order(tmp_path: Path, orientation: tuple[float, ...]) -> None:
    reference = _volume(orientation)
    labels = (reference.array % 3).astype(np.uint8)
    # This package's (Z, Y, X) NIfTI
    ours = write_nifti(reference, tmp_path / "zyx.nii.gz", labels)
    np.testing.assert_array_equal(read_label_volume(ours, reference), labels)
    # A converter's usual (X, Y, Z) NIfTI, with the first axis flipped
    xyz = np.transpose(labels, (2, 1, 0))[::-1]
    affine = reference.affine.copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, 0] * (reference.shape[2] - 1)
    affine[:3, 0] *= -1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz), LPS_TO_RAS @ affine), tmp_path / "xyz.nii")
    np.testing.assert_array_equal(read_label_volume(tmp_path / "xyz.nii", reference), labels)


def test_misaligned_labels_are_refused(tmp_path: Path) -> None:
    reference = _volume()
    labels = np.zeros(reference.shape, dtype=np.uint8)
    shifted = Volume(
        array=reference.array,
        spacing=reference.spacing,
        origin=(reference.origin[0] + 3.0, reference.origin[1], reference.origin[2]),
        orientation=reference.orientation,
    )
    with pytest.raises(LabelAlignmentError, match="origin"):
        read_label_volume(write_nifti(shifted, tmp_path / "a.nii.gz", labels), reference)
    small = Volume(
        array=reference.array[:5], spacing=reference.spacing, origin=reference.origin, orientation=AXIAL
    )
    with pytest.raises(LabelAlignmentError, match="shape"):
        read_label_volume(write_nifti(small, tmp_path / "b.nii.gz", labels[:5]), reference)
    coarse = Volume(
        array=reference.array, spacing=(3.0, 0.8, 1.1), origin=reference.origin, orientation=AXIAL
    )
    with pytest.raises(LabelAlignmentError, match="grid"):
        read_label_volume(write_nifti(coarse, tmp_path / "c.nii.gz", labels), reference)
    with pytest.raises(LabelAlignmentError, match=r"0\.\.255"):
        read_label_volume(
            write_nifti(reference, tmp_path / "d.nii.gz", labels.astype(np.float32) - 1), reference
        )
