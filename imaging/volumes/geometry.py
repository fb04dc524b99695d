"""Series geometry: what can be wrong with a stack of slices, and the errors that say so.

Every message names issue kinds, counts and slice positions in the sorted stack only: never
a UID, a path or a header value (they can carry PHI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

__all__ = [
    "GeometryIssue",
    "GeometryIssueKind",
    "GeometryReport",
    "LabelAlignmentError",
    "SeriesGeometryError",
    "VolumeError",
    "lps_affine",
]


class VolumeError(ValueError):
    """Base class of the errors of ``imaging.volumes`` (messages are PHI-free)."""


class GeometryIssueKind(StrEnum):
    """What a series' slices can get wrong. ``FATAL`` kinds stop assembly."""

    MISSING_ATTRIBUTE = "missing_attribute"  # no IPP/IOP/PixelSpacing/Rows/Columns
    MISSING_PIXEL_DATA = "missing_pixel_data"
    UNREADABLE = "unreadable"  # not DICOM, or pixel data that cannot be decoded
    MIXED_SERIES = "mixed_series"  # instances of several series given as one
    MIXED_ORIENTATION = "mixed_orientation"
    MIXED_SIZE = "mixed_size"  # Rows/Columns differ
    MIXED_PIXEL_SPACING = "mixed_pixel_spacing"
    MIXED_FRAME_OF_REFERENCE = "mixed_frame_of_reference"
    MULTI_FRAME = "multi_frame"  # enhanced multi-frame objects are not slice series
    DUPLICATE_POSITION = "duplicate_position"  # two slices at one position: the first is kept
    GAP = "gap"  # a step of about twice the usual or more: slices missing
    IRREGULAR_SPACING = "irregular_spacing"  # steps that differ beyond tolerance, not a gap
    TILTED = "tilted"  # positions not along the slice normal (gantry tilt / shear)
    SINGLE_SLICE = "single_slice"  # slice spacing taken from SliceThickness
    NO_SLICES = "no_slices"


#: Issue kinds that are only reported: the volume is still exact.
NON_FATAL = frozenset({GeometryIssueKind.DUPLICATE_POSITION, GeometryIssueKind.SINGLE_SLICE})


@dataclass(frozen=True)
class GeometryIssue:
    kind: GeometryIssueKind
    detail: str = ""  # counts, slice indices, millimetres: never identifiers

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    @property
    def fatal(self) -> bool:
        return self.kind not in NON_FATAL


@dataclass(frozen=True)
class GeometryReport:
    """What assembly found: slices given, used, dropped, and the issues."""

    slices_in: int = 0
    slices_used: int = 0
    issues: tuple[GeometryIssue, ...] = field(default_factory=tuple)
    max_step_deviation_mm: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def fatal(self) -> list[GeometryIssue]:
        return [i for i in self.issues if i.fatal]

    def kinds(self) -> set[GeometryIssueKind]:
        return {i.kind for i in self.issues}


class SeriesGeometryError(VolumeError):
    """A series cannot form a volume; ``report`` lists the issues (PHI-free)."""

    def __init__(self, report: GeometryReport) -> None:
        self.report = report
        issues = "; ".join(str(i) for i in report.fatal) or "no usable slices"
        super().__init__(f"series cannot form a volume ({report.slices_in} slices): {issues}")


class LabelAlignmentError(VolumeError):
    """A label volume does not lie on the reference series' grid."""


def lps_affine(
    origin: tuple[float, float, float],
    orientation: tuple[float, float, float, float, float, float],
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """4x4 from voxel index (x=column, y=row, z=slice) to patient LPS millimetres.

    ``orientation`` is ImageOrientationPatient (row direction cosines, then column direction
    cosines); ``spacing`` is (z, y, x); slices advance along row x column (the slice normal).
    """
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    dz, dy, dx = spacing
    affine = np.eye(4)
    affine[:3, 0] = row * dx
    affine[:3, 1] = col * dy
    affine[:3, 2] = normal * dz
    affine[:3, 3] = origin
    return affine
