"""A small synthetic MR series (valid MR Image IOD) with a known blob, for segmentation tests."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_series(
    slices: int = 12,
    size: int = 32,
    *,
    spacing: tuple[float, float, float] = (3.0, 2.0, 2.0),
    seed: int = 0,
    study_uid: str | None = None,
    shuffle: bool = True,
    orientation: tuple[float, float, float, float, float, float] = (1, 0, 0, 0, 1, 0),
) -> list[Dataset]:
    """``slices`` axial MR slices (``size`` x ``size``, spacing (z, y, x) mm) of one series.

    The image is noise plus a bright ellipsoid in the middle. Returned in random order when
    ``shuffle`` (as a PACS sends them); InstanceNumber and position give the true order.
    ``orientation`` (ImageOrientationPatient) tilts the stack; positions follow its normal.
    """
    rng = np.random.default_rng(seed)
    study = study_uid or generate_uid()
    series, frame = generate_uid(), generate_uid()
    z, y, x = np.mgrid[:slices, :size, :size]
    centre = (slices / 2, size / 2, size / 2)
    blob = ((z - centre[0]) / (slices / 4)) ** 2 + ((y - centre[1]) / (size / 4)) ** 2
    blob = blob + ((x - centre[2]) / (size / 5)) ** 2 <= 1
    volume = (rng.normal(200, 20, (slices, size, size)) + 600 * blob).clip(0, 4095).astype(np.uint16)
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    origin = np.array([-size * spacing[2] / 2, -size * spacing[1] / 2, -20.0])
    out = []
    for index in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "SYNTH^SUBJECT", "SYN001", "", "O"
        ds.StudyDate, ds.StudyTime = "20240101", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, index + 1
        ds.Modality, ds.Manufacturer = "MR", "RadGate test"
        ds.PositionReferenceIndicator, ds.PatientPosition, ds.Laterality = "", "HFS", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 3.0, 8.0, 1
        ds.SliceThickness, ds.SpacingBetweenSlices = spacing[0], spacing[0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin + index * spacing[0] * normal]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = volume[index].tobytes()
        out.append(ds)
    if shuffle:
        rng.shuffle(out)
    return out


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def blob_labels(sources: list[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """Sources sorted by position and a 2-structure label volume (bright blob split left/right)."""

    def along_normal(d: Dataset) -> float:
        cosines = np.asarray([float(v) for v in d.ImageOrientationPatient])
        return float(
            np.cross(cosines[:3], cosines[3:]) @ np.asarray([float(v) for v in d.ImagePositionPatient])
        )

    ordered = sorted(sources, key=along_normal)
    pixels = np.stack([d.pixel_array for d in ordered]).astype(np.float32)
    labels = np.zeros(pixels.shape, np.uint8)
    bright = pixels > 500
    half = pixels.shape[2] // 2
    labels[:, :, :half][bright[:, :, :half]] = 1
    labels[:, :, half:][bright[:, :, half:]] = 2
    return ordered, labels
