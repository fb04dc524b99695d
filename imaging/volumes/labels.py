"""Label volumes (NIfTI or DICOM SEG) brought onto a reference series' grid, or refused.

NIfTI: the file's affine (RAS) is turned to LPS and compared with the reference grid; a
label map on the same grid in any axis order or direction (e.g. the usual (X, Y, Z) NIfTI
of a converter, or this package's (Z, Y, X)) is permuted and flipped onto it. Anything
else (other spacing, shifted origin, rotated, other size) raises
:class:`LabelAlignmentError`: labels are never resampled silently.

DICOM SEG (highdicom): frames are matched to the reference slices by the source SOP
Instance UIDs the segmentation references (through ``source_uid_map`` when the SEG was made
over the original slices and the reference is their de-identified copy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from imaging.volumes.geometry import LabelAlignmentError, VolumeError
from imaging.volumes.volume import LPS_TO_RAS, Volume

__all__ = ["align_to_reference", "read_label_volume"]

_TOL_MM = 0.05  # origin/spacing agreement; positions are rounded to micrometres in headers
_MAX_LABEL = 255


def _zyx_affine(reference: Volume) -> np.ndarray:
    """Reference affine from (z, y, x) voxel indices to LPS."""
    return reference.affine[:, [2, 1, 0, 3]]


def align_to_reference(data: np.ndarray, affine_lps: np.ndarray, reference: Volume) -> np.ndarray:
    """Permute/flip ``data`` (any 3D axis order, ``affine_lps`` from its indices to LPS) onto
    the reference (Z, Y, X) grid; :class:`LabelAlignmentError` when it is not the same grid."""
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LabelAlignmentError(f"a label volume must be 3D (got {data.ndim} dimensions)")
    # Maps label voxel indices to reference voxel indices; on the same grid it is a signed
    # permutation with an integer translation.
    mapping = np.linalg.inv(_zyx_affine(reference)) @ affine_lps
    linear = mapping[:3, :3]
    permutation = np.argmax(np.abs(linear), axis=0)  # label axis a -> reference axis permutation[a]
    signs = np.sign(linear[permutation, range(3)])
    expected = np.zeros((3, 3))
    expected[permutation, range(3)] = signs
    if sorted(permutation.tolist()) != [0, 1, 2] or np.max(np.abs(linear - expected)) > 1e-3:
        raise LabelAlignmentError(
            "the label volume's spacing or orientation differs from the series (it is not on the same grid)"
        )
    out_shape = tuple(data.shape[list(permutation).index(r)] for r in range(3))
    if out_shape != reference.shape:
        raise LabelAlignmentError(
            f"the label volume has shape {out_shape} on the series axes, not {reference.shape}"
        )
    shift = mapping[:3, 3]
    # Axis a with sign -1 starts at the far end: its index 0 maps to reference index n-1.
    target_start = np.array(
        [0.0 if s > 0 else reference.shape[permutation[a]] - 1 for a, s in enumerate(signs)]
    )
    offsets = shift[permutation] - target_start[np.arange(3)]
    spacing_zyx = np.array(reference.spacing)
    if np.max(np.abs(offsets) * spacing_zyx[permutation]) > _TOL_MM:
        raise LabelAlignmentError("the label volume's origin differs from the series (shifted grid)")
    moved = np.transpose(data, axes=np.argsort(permutation))
    for r in range(3):
        a = int(np.where(permutation == r)[0][0])
        if signs[a] < 0:
            moved = np.flip(moved, axis=r)
    return np.ascontiguousarray(moved)


def _as_labels(data: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(data)):
        raise LabelAlignmentError("the label volume has non-finite values")
    if data.size and (data.min() < 0 or data.max() > _MAX_LABEL or np.any(np.mod(data, 1) != 0)):
        raise LabelAlignmentError("label values must be whole numbers 0..255")
    return data.astype(np.uint8)


def _read_nifti(path: Path, reference: Volume) -> np.ndarray:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise VolumeError("the label volume is not a NIfTI image")
        data = np.asarray(image.dataobj)
        affine = np.array(image.affine, dtype=np.float64)
    except (OSError, ValueError, nib.filebasedimages.ImageFileError, EOFError) as exc:
        raise VolumeError(f"cannot read the NIfTI label volume ({type(exc).__name__})") from None
    return align_to_reference(_as_labels(data), LPS_TO_RAS @ affine, reference)


def _read_seg(path: Path, reference: Volume, source_uid_map: Callable[[str], str] | None) -> np.ndarray:
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except (OSError, ValueError, AttributeError, KeyError) as exc:
        raise VolumeError(f"cannot read the DICOM SEG ({type(exc).__name__})") from None
    # referenced SOP Instance UID as the reference series names it -> as the SEG names it
    as_seg = {}
    for _, _, source in seg.get_source_image_uids():
        as_seg[str(source)] = str(source)
        if source_uid_map is not None:
            as_seg[source_uid_map(str(source))] = str(source)
    present = [uid for uid in reference.sop_instance_uids if uid in as_seg]
    if not present:
        raise LabelAlignmentError("the DICOM SEG does not reference the slices of this series")
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[as_seg[uid] for uid in present],
            combine_segments=True,
            skip_overlap_checks=True,
            assert_missing_frames_are_empty=True,
        )
    except (ValueError, RuntimeError, KeyError) as exc:
        raise LabelAlignmentError(
            f"the DICOM SEG frames cannot be matched to the series ({type(exc).__name__})"
        ) from None
    if pixels.shape[1:] != reference.shape[1:]:
        raise LabelAlignmentError("the DICOM SEG frames are not the size of the series' slices")
    out = np.zeros(reference.shape, dtype=np.uint8)
    index = {uid: k for k, uid in enumerate(reference.sop_instance_uids)}
    for uid, frame in zip(present, pixels, strict=True):
        out[index[uid]] = _as_labels(np.asarray(frame))
    return out


def read_label_volume(
    path: Path, reference: Volume, *, source_uid_map: Callable[[str], str] | None = None
) -> np.ndarray:
    """(Z, Y, X) uint8 labels on ``reference``'s grid from a NIfTI (.nii, .nii.gz) or DICOM SEG file.

    ``source_uid_map`` turns the UIDs a DICOM SEG references into the reference's: a SEG made at
    the site over the original slices labels their de-identified copies through the keyed UID
    pseudonym (``imaging.deid.pseudonym.Pseudonymizer.uid``)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise VolumeError(f"cannot read the label volume ({exc.strerror})") from None
    if head[128:132] == b"DICM":
        return _read_seg(path, reference, source_uid_map)
    return _read_nifti(path, reference)
