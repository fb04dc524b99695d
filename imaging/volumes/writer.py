"""Volume to DICOM series: one single-frame instance per slice with exact IPP/IOP/spacing.

Used to write the anatomy demo series and to round-trip test assembly. Study-, patient- and
series-level attributes come from a template dataset; the geometry and pixel modules are
set here from the :class:`~imaging.volumes.Volume`.
"""

from __future__ import annotations

import copy
import hashlib

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from imaging.volumes.volume import Volume

__all__ = ["CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE", "derived_uid", "series_datasets"]

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def derived_uid(*parts: object) -> str:
    """A deterministic UID under the UUID-derived root ``2.25`` (PS3.5 B.2)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big") >> 1)


def _ds(values: object, digits: int = 6) -> list[str]:
    """Decimal strings of at most 16 characters."""
    out = []
    for v in values:  # type: ignore[attr-defined]
        text = f"{float(v):.{digits}f}".rstrip("0").rstrip(".")
        out.append("0" if text in ("-0", "") else text[:16])
    return out


def _stored(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 pixels and the (slope, intercept) that give the array back."""
    low, high = float(array.min()), float(array.max())
    integral = bool(np.all(np.equal(np.mod(array, 1), 0)))
    if integral and low >= 0 and high <= 65535:
        return array.astype(np.uint16), 1.0, 0.0
    slope = (high - low) / 65535 if high > low else 1.0
    return np.round((array - low) / slope).astype(np.uint16), slope, low


def series_datasets(
    volume: Volume,
    template: Dataset,
    *,
    sop_class_uid: str = MR_IMAGE_STORAGE,
    series_instance_uid: str | None = None,
) -> list[Dataset]:
    """One dataset per slice of ``volume`` (file meta set, ready for ``save_as``).

    UIDs: the volume's own where set, otherwise derived from the series UID. Pixel values
    are stored as uint16, with RescaleSlope/Intercept when the array is not integral in range.
    """
    series_uid = series_instance_uid or volume.series_instance_uid or derived_uid("series", id(volume))
    study_uid = (
        volume.study_instance_uid
        or str(template.get("StudyInstanceUID", ""))
        or derived_uid("study", series_uid)
    )
    frame_uid = volume.frame_of_reference_uid or derived_uid("frame", series_uid)
    sop_uids = volume.sop_instance_uids or tuple(
        derived_uid("sop", series_uid, k) for k in range(volume.shape[0])
    )
    pixels, slope, intercept = _stored(volume.array)
    dz, dy, dx = volume.spacing
    out = []
    for k in range(volume.shape[0]):
        ds = copy.deepcopy(template)
        ds.SOPClassUID = sop_class_uid
        ds.SOPInstanceUID = sop_uids[k]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds(volume.slice_position(k))
        ds.ImageOrientationPatient = _ds(volume.orientation, 8)
        ds.PixelSpacing = _ds((dy, dx))
        ds.SliceThickness = _ds((dz,))[0]
        ds.SpacingBetweenSlices = _ds((dz,))[0]
        ds.SliceLocation = _ds((float(np.asarray(volume.slice_position(k)) @ volume.normal),))[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleSlope = _ds((slope,), 10)[0]
            ds.RescaleIntercept = _ds((intercept,), 6)[0]
            ds.RescaleType = "US"
        ds.PixelData = np.ascontiguousarray(pixels[k]).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
        ds.file_meta.ImplementationVersionName = "RADGATE_VOL"
        out.append(ds)
    return out
