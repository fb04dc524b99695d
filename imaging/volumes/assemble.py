"""Series to volume: group instances by series, sort slices along the normal, check geometry.

pydicom directly rather than MONAI's ``PydicomReader``/``ITKReader``: those sort and stack
silently, while a platform must report (PHI-free) why a series is not a volume (gaps,
duplicate positions, mixed orientation or size, tilt, missing pixel data) and keep the
de-identified UIDs of each slice in order (DICOM SEG results reference them). Spacing
between slices comes from the positions, never from SliceThickness.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from imaging.decoding import PixelDataError, decode_pixels
from imaging.volumes.geometry import (
    GeometryIssue,
    GeometryIssueKind,
    GeometryReport,
    SeriesGeometryError,
)
from imaging.volumes.volume import Volume

__all__ = ["assemble_series", "group_series"]

_ORIENTATION_TOL = 1e-4
_SPACING_TOL_MM = 1e-3
# Steps may differ by this fraction of the median step (positions are rounded in headers).
_STEP_TOL = 0.02
_GROUP_TAGS = ["SeriesInstanceUID", "NumberOfFrames"]


def group_series(paths: Iterable[Path]) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> its files (sorted by path). Unreadable files and objects without a
    series UID are left out (headers only are read)."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_GROUP_TAGS)
        except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if uid:
            groups.setdefault(uid, []).append(Path(path))
    return {uid: sorted(files) for uid, files in sorted(groups.items())}


@dataclass
class _Slice:
    ds: Dataset
    orientation: np.ndarray
    position: np.ndarray
    size: tuple[int, int]
    pixel_spacing: tuple[float, float]
    instance_number: int


def _read(item: Path | Dataset) -> Dataset:
    if isinstance(item, Dataset):
        return item
    return pydicom.dcmread(item)


def _floats(value: object, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        return None
    return values


def _slice(ds: Dataset) -> _Slice | GeometryIssueKind:
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return GeometryIssueKind.MULTI_FRAME
    if "PixelData" not in ds:
        return GeometryIssueKind.MISSING_PIXEL_DATA
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    pixel_spacing = _floats(ds.get("PixelSpacing"), 2)
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if orientation is None or position is None or pixel_spacing is None or not rows or not columns:
        return GeometryIssueKind.MISSING_ATTRIBUTE
    if np.any(pixel_spacing <= 0):
        return GeometryIssueKind.MISSING_ATTRIBUTE
    row, col = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        return GeometryIssueKind.MISSING_ATTRIBUTE  # not an orthonormal pair of cosines
    number = ds.get("InstanceNumber")
    return _Slice(
        ds=ds,
        orientation=orientation,
        position=position,
        size=(int(rows), int(columns)),
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        instance_number=int(number) if number not in (None, "") else 0,
    )


def _pixels(ds: Dataset) -> np.ndarray:
    array = decode_pixels(ds).astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        array = array * np.float32(slope) + np.float32(intercept)
    return array


def _consistency(slices: list[_Slice]) -> list[GeometryIssue]:
    issues = []
    first = slices[0]
    checks = (
        (GeometryIssueKind.MIXED_SERIES, lambda s: str(s.ds.get("SeriesInstanceUID", ""))),
        (GeometryIssueKind.MIXED_FRAME_OF_REFERENCE, lambda s: str(s.ds.get("FrameOfReferenceUID", ""))),
        (GeometryIssueKind.MIXED_SIZE, lambda s: s.size),
    )
    for kind, key in checks:
        values = {key(s) for s in slices}
        if len(values) > 1:
            issues.append(GeometryIssue(kind, f"{len(values)} distinct values"))
    bad_orientation = sum(
        1 for s in slices if np.max(np.abs(s.orientation - first.orientation)) > _ORIENTATION_TOL
    )
    if bad_orientation:
        issues.append(
            GeometryIssue(GeometryIssueKind.MIXED_ORIENTATION, f"{bad_orientation} slice(s) differ")
        )
    bad_spacing = sum(
        1
        for s in slices
        if max(abs(a - b) for a, b in zip(s.pixel_spacing, first.pixel_spacing, strict=True))
        > _SPACING_TOL_MM
    )
    if bad_spacing:
        issues.append(GeometryIssue(GeometryIssueKind.MIXED_PIXEL_SPACING, f"{bad_spacing} slice(s) differ"))
    return issues


def _sort_and_space(
    slices: list[_Slice], normal: np.ndarray, issues: list[GeometryIssue]
) -> tuple[list[_Slice], float, float]:
    """Slices sorted along the normal (duplicates dropped), the slice spacing and the worst step
    deviation."""
    slices = sorted(slices, key=lambda s: (float(s.position @ normal), s.instance_number))
    kept = [slices[0]]
    duplicates = 0
    for s in slices[1:]:
        if np.linalg.norm(s.position - kept[-1].position) < _SPACING_TOL_MM * 10:
            duplicates += 1
            continue
        kept.append(s)
    if duplicates:
        issues.append(GeometryIssue(GeometryIssueKind.DUPLICATE_POSITION, f"{duplicates} slice(s) dropped"))
    if len(kept) == 1:
        thickness = float(kept[0].ds.get("SpacingBetweenSlices") or kept[0].ds.get("SliceThickness") or 1.0)
        issues.append(GeometryIssue(GeometryIssueKind.SINGLE_SLICE))
        return kept, abs(thickness) or 1.0, 0.0
    offsets = np.array([float(s.position @ normal) for s in kept])
    steps = np.diff(offsets)
    step = float(np.median(steps))
    deviation = float(np.max(np.abs(steps - step)))
    gaps = [i for i, d in enumerate(steps) if d > step * 1.5]
    if gaps:
        issues.append(
            GeometryIssue(
                GeometryIssueKind.GAP,
                f"{len(gaps)} gap(s), first after sorted slice {gaps[0]} "
                f"({steps[gaps[0]]:.2f} mm, usual step {step:.2f} mm)",
            )
        )
    elif deviation > max(_STEP_TOL * step, _SPACING_TOL_MM):
        issues.append(
            GeometryIssue(
                GeometryIssueKind.IRREGULAR_SPACING,
                f"steps deviate up to {deviation:.3f} mm from {step:.3f} mm",
            )
        )
    # Positions must advance along the normal: an in-plane drift is a tilted (sheared) stack.
    drift = max(
        float(np.linalg.norm((s.position - kept[0].position) - (o - offsets[0]) * normal))
        for s, o in zip(kept, offsets, strict=True)
    )
    if drift > max(_STEP_TOL * step, 0.01):
        issues.append(GeometryIssue(GeometryIssueKind.TILTED, f"in-plane drift up to {drift:.2f} mm"))
    return kept, step, deviation


def assemble_series(items: Sequence[Path | Dataset] | Iterable[Path | Dataset]) -> Volume:
    """Assemble one series (files or datasets, any order) into a :class:`Volume`.

    Rescale slope/intercept are applied (float32). Raises :class:`SeriesGeometryError`, with
    a PHI-free message and the full report, when the slices cannot form a volume.
    """
    items = list(items)
    issues: list[GeometryIssue] = []
    slices: list[_Slice] = []
    dropped: dict[GeometryIssueKind, int] = {}
    for item in items:
        try:
            ds = _read(item)
        except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError, KeyError):
            dropped[GeometryIssueKind.UNREADABLE] = dropped.get(GeometryIssueKind.UNREADABLE, 0) + 1
            continue
        result = _slice(ds)
        if isinstance(result, GeometryIssueKind):
            dropped[result] = dropped.get(result, 0) + 1
        else:
            slices.append(result)
    for kind, count in dropped.items():
        issues.append(GeometryIssue(kind, f"{count} instance(s)"))
    if not slices:
        issues.append(GeometryIssue(GeometryIssueKind.NO_SLICES))
        raise SeriesGeometryError(GeometryReport(len(items), 0, tuple(issues)))
    issues.extend(_consistency(slices))
    if any(i.fatal for i in issues):
        raise SeriesGeometryError(GeometryReport(len(items), 0, tuple(issues)))
    first = slices[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    kept, step, deviation = _sort_and_space(slices, normal, issues)
    report = GeometryReport(len(items), len(kept), tuple(issues), deviation)
    if report.fatal:
        raise SeriesGeometryError(report)
    try:
        array = np.stack([_pixels(s.ds) for s in kept])
    except (PixelDataError, ValueError, AttributeError, KeyError) as exc:
        bad = GeometryIssue(
            GeometryIssueKind.UNREADABLE, f"pixel data cannot be decoded ({type(exc).__name__})"
        )
        raise SeriesGeometryError(GeometryReport(len(items), 0, (*issues, bad))) from None
    if array.shape[1:] != first.size:
        bad = GeometryIssue(GeometryIssueKind.MIXED_SIZE, "pixel data does not match Rows/Columns")
        raise SeriesGeometryError(GeometryReport(len(items), 0, (*issues, bad)))
    head = kept[0]
    o = head.orientation
    return Volume(
        array=array,
        spacing=(step, head.pixel_spacing[0], head.pixel_spacing[1]),
        origin=(float(head.position[0]), float(head.position[1]), float(head.position[2])),
        orientation=(float(o[0]), float(o[1]), float(o[2]), float(o[3]), float(o[4]), float(o[5])),
        study_instance_uid=str(head.ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(head.ds.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(head.ds.get("FrameOfReferenceUID", "")),
        sop_instance_uids=tuple(str(s.ds.get("SOPInstanceUID", "")) for s in kept),
        geometry=report,
    )
