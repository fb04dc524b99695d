"""Small, valid DICOM datasets with PHI in known places, for unit tests."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "DOEWINTERS^JOHANNA"
PATIENT_ID = "MRN5566771"
ACCESSION = "ACC99887766"
BIRTH_DATE = "19610314"
STUDY_DATE = "20230105"
INSTITUTION = "Saint Hypothetical Hospital"
PHYSICIAN = "HOUSEGREGORY^ALAN"


def make_ct(**overrides: object) -> Dataset:
    """A CT Image (8x8) with identifying attributes at the top level and in sequences."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.SourceApplicationEntityTitle = "HOSPWS01"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "061Y"
    ds.AccessionNumber = ACCESSION
    ds.StudyDate = STUDY_DATE
    ds.SeriesDate = STUDY_DATE
    ds.ContentDate = STUDY_DATE
    ds.StudyTime = "101500"
    ds.ContentTime = "101512.5"
    ds.AcquisitionDateTime = STUDY_DATE + "101510.000000+0100"
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = PHYSICIAN
    ds.StudyDescription = f"CT CHEST for Johanna Doewinters {PATIENT_ID}"
    ds.SeriesDescription = "AXIAL 5mm"
    ds.ImageComments = "Reviewed 2023-01-05 by Dr. House, call +1 555 123 4567"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Imaging"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.DeviceSerialNumber = "SN-4242-XY"
    ds.StationName = "CTROOM3"
    ds.StudyID = "S123"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 5
    ds.KVP = 120
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = Sequence([ref])
    for key, value in overrides.items():
        setattr(ds, key, value)
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pydicom_file(name: str) -> str:
    """Path of a file shipped in pydicom's test data; a missing file fails the test."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    assert isinstance(found, str), f"pydicom test file {name} not found"
    return found
