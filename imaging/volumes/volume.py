"""``Volume``: an assembled series on its grid, and its NIfTI form.

Arrays are (Z, Y, X): slices sorted along the slice normal, rows, columns. NIfTI files
written here keep that axis order (nibabel and MONAI load them as (Z, Y, X)), with the
affine from those indices to RAS millimetres, so ``Spacingd(pixdim=(z, y, x))`` matches the
volume's own ``spacing``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imaging.volumes.geometry import GeometryReport, lps_affine

if TYPE_CHECKING:
    import nibabel as nib

__all__ = ["LPS_TO_RAS", "Volume", "nifti_bytes", "nifti_image", "write_nifti", "zyx_ras_affine"]

#: Flip of the first two patient axes: DICOM's LPS <-> NIfTI's RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Column permutation from (z, y, x) voxel indices to (x, y, z) ones.
_ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


@dataclass(frozen=True)
class Volume:
    """One series as a 3D array with its geometry and (de-identified) identifiers."""

    array: np.ndarray  # (Z, Y, X)
    spacing: tuple[float, float, float]  # (z, y, x) mm
    origin: tuple[float, float, float]  # ImagePositionPatient of the first slice, LPS mm
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_instance_uids: tuple[str, ...] = ()
    geometry: GeometryReport = field(default_factory=GeometryReport)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError("a Volume's array is (Z, Y, X)")
        if any(s <= 0 for s in self.spacing):
            raise ValueError("spacing must be positive")
        if self.sop_instance_uids and len(self.sop_instance_uids) != self.array.shape[0]:
            raise ValueError("one SOP Instance UID per slice")

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    @property
    def affine(self) -> np.ndarray:
        """4x4: voxel index (x=column, y=row, z=slice) -> LPS mm."""
        return lps_affine(self.origin, self.orientation, self.spacing)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:]))

    def slice_position(self, index: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice ``index``."""
        position = np.asarray(self.origin) + index * self.spacing[0] * self.normal
        return (float(position[0]), float(position[1]), float(position[2]))


def zyx_ras_affine(volume: Volume) -> np.ndarray:
    """Affine of the (Z, Y, X) array to RAS mm (what the NIfTI files of this package carry)."""
    return LPS_TO_RAS @ volume.affine @ _ZYX_TO_XYZ


def nifti_image(volume: Volume, array: np.ndarray | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``array`` (default: the volume's own) on the volume's grid."""
    import nibabel as nib

    data = volume.array if array is None else array
    if data.shape != volume.array.shape:
        raise ValueError("the array is not on the volume's grid")
    image = nib.Nifti1Image(np.ascontiguousarray(data), zyx_ras_affine(volume))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return image


def nifti_bytes(volume: Volume, array: np.ndarray | None = None) -> bytes:
    """Gzipped NIfTI bytes, byte-identical for identical inputs (mtime 0): content-addressable."""
    return gzip.compress(nifti_image(volume, array).to_bytes(), compresslevel=6, mtime=0)


def write_nifti(volume: Volume, path: Path, array: np.ndarray | None = None) -> Path:
    from imaging.store import atomic_write

    atomic_write(Path(path), nifti_bytes(volume, array), durable=False)
    return Path(path)
