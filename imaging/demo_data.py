"""Synthetic chest radiograph studies for demos and tests: valid DICOM with realistic PHI headers.

Every file is a one-image study (CR or DX "for presentation", uint16 MONOCHROME2) of a
synthetic patient at one of several sites, acquired on one of that site's devices. The
headers carry the identifiers a real export carries (name, ID, birth date, accession number,
institution name and address, referring physician, operator, dates, a study description
naming the patient) so that de-identification has something real to remove. Half the
studies (on average) hold a finding a small network can learn: a bright round opacity in a
lung field. The labels CSV is keyed by the ORIGINAL accession number, as a site would export it.

All names, identifiers and addresses are invented; the output is deterministic for a seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

__all__ = ["LABEL_NAMES", "DemoSet", "DemoStudy", "set_identifying_headers", "write_demo_studies"]

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
#: Label values used in the CSV: 0 = no finding, 1 = opacity present.
LABEL_NAMES = ("no_finding", "opacity")
_UID_ROOT = "2.25."


@dataclass(frozen=True)
class _Device:
    modality: str  # "CR" or "DX"
    manufacturer: str
    model: str
    bits_stored: int
    gain: float  # scanner-specific intensity scale: a realistic source of site effects
    noise: float


@dataclass(frozen=True)
class _Site:
    name: str
    address: str
    station_prefix: str
    devices: tuple[_Device, ...]


_SITES: tuple[_Site, ...] = (
    _Site(
        "Riverside General Hospital",
        "1200 Harbor Road, Millbrook, NY 10001",
        "RGH",
        (
            _Device("DX", "SIEMENS", "Ysio Max", 12, 1.0, 0.020),
            _Device("CR", "FUJIFILM Corporation", "FCR Capsula XLII", 10, 0.85, 0.030),
        ),
    ),
    _Site(
        "St. Aldric Medical Center",
        "45 Cathedral Street, Eastvale, MA 02118",
        "SAM",
        (_Device("DX", "GE Healthcare", "Definium 6000", 14, 1.1, 0.015),),
    ),
    _Site(
        "Northfield Community Clinic",
        "9 Prairie Lane, Northfield, MN 55057",
        "NCC",
        (
            _Device("CR", "Carestream Health", "DirectView CR 975", 12, 0.9, 0.035),
            _Device("DX", "Philips Medical Systems", "DigitalDiagnost", 12, 1.05, 0.020),
        ),
    ),
    _Site(
        "Lakeshore University Hospital",
        "300 University Avenue, Lakeshore, IL 60611",
        "LUH",
        (_Device("DX", "Philips Medical Systems", "DigitalDiagnost", 12, 1.0, 0.018),),
    ),
)

_GIVEN_F = ("MARIA", "ANNA", "LINDA", "SARAH", "GRACE", "ELENA", "NORA", "JUDITH", "CLARA", "IRIS")
_GIVEN_M = ("JOHN", "DAVID", "AHMED", "PETER", "LUCAS", "OMAR", "VICTOR", "HENRY", "SAMUEL", "RAJ")
_FAMILY = (
    "SMITH", "GARCIA", "NGUYEN", "MUELLER", "OKAFOR", "ROSSI", "KOWALSKI", "TANAKA", "DUBOIS",
    "HASSAN", "JOHANSSON", "PATEL", "OBRIEN", "SILVA", "BERGER", "IVANOV",
)  # fmt: skip
_PHYSICIANS = ("HOUSE^GREGORY^^DR", "GREY^MEREDITH^^DR", "CARTER^JOHN^^DR", "QUINN^MICHAELA^^DR")
_OPERATORS = ("TECH^ALICE", "TECH^BRUNO", "TECH^CHEN", "TECH^DANA")


@dataclass(frozen=True)
class DemoStudy:
    """What was written for one study (originals: for tests and the demo only, never logged)."""

    path: Path
    accession_number: str
    patient_id: str
    study_instance_uid: str
    label: int
    sex: str
    age: int
    site: str
    manufacturer: str
    model: str
    modality: str


@dataclass
class DemoSet:
    """The written files and the labels CSV (``accession_number,label``)."""

    files: list[Path]
    labels_csv: Path
    studies: list[DemoStudy] = field(default_factory=list)

    @property
    def prevalence(self) -> float:
        return sum(s.label for s in self.studies) / max(len(self.studies), 1)


def _chest_image(rng: np.random.Generator, size: int, positive: bool, device: _Device) -> np.ndarray:
    """A chest-like radiograph in [0, 1]: body, two darker lung fields, spine, ribs, heart."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    cx = 0.5 + rng.normal(0, 0.02)
    body = np.exp(-(((x - cx) / 0.44) ** 6 + ((y - 0.6) / 0.6) ** 8))
    image = 0.08 + 0.62 * body
    lung_w, lung_h = 0.16 + rng.normal(0, 0.01), 0.27 + rng.normal(0, 0.015)
    lungs = []
    lung_mask = np.zeros_like(x)
    for side in (-1, 1):
        lx, ly = cx + side * 0.2, 0.45
        lung_mask = np.maximum(lung_mask, np.exp(-(((x - lx) / lung_w) ** 4 + ((y - ly) / lung_h) ** 4)))
        lungs.append((lx, ly))
    image -= 0.42 * lung_mask
    spine = np.exp(-(((x - cx) / 0.04) ** 2)) * (y > 0.08)
    image += 0.12 * spine * (1 - lung_mask)
    for k in range(8):  # posterior ribs: faint arcs over the lung fields
        ry = 0.2 + 0.065 * k
        rib = np.exp(-(((y - ry - 0.06 * ((x - cx) / 0.25) ** 2) / 0.013) ** 2))
        image += 0.06 * rib * lung_mask
    heart = np.exp(-((((x - cx - 0.07) / 0.14) ** 2 + ((y - 0.62) / 0.12) ** 2) ** 1.5))
    image += 0.25 * heart * lung_mask
    if positive:
        lx, ly = lungs[int(rng.integers(2))]
        ox = lx + rng.uniform(-0.06, 0.06)
        oy = ly + rng.uniform(-0.15, 0.12)
        radius = rng.uniform(0.055, 0.09)
        image += rng.uniform(0.30, 0.45) * np.exp(-((((x - ox) ** 2 + (y - oy) ** 2) / radius**2) ** 2))
    image = image * device.gain + rng.normal(0, device.noise, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _uid(*parts: object) -> str:
    """A deterministic UID under the UUID-derived root ``2.25`` (PS3.5 B.2)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return _UID_ROOT + str(int.from_bytes(digest[:16], "big") >> 1)


def set_identifying_headers(
    ds: Dataset,
    *,
    patient: dict[str, str],
    study: dict[str, str],
    site: _Site,
    station: str,
    manufacturer: str,
    model: str,
) -> None:
    """The identifiers and site details a real export carries (what de-identification removes)."""
    ds.AccessionNumber = study["accession"]
    ds.Manufacturer = manufacturer
    ds.InstitutionName = site.name
    ds.InstitutionAddress = site.address
    ds.ReferringPhysicianName = study["referrer"]
    ds.StationName = station
    ds.OperatorsName = study["operator"]
    ds.ManufacturerModelName = model
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]
    ds.PatientAge = f"{int(patient['age']):03d}Y"
    other_id = Dataset()
    other_id.PatientID = patient["mrn2"]
    other_id.IssuerOfPatientID = site.name
    other_id.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other_id])
    ds.DeviceSerialNumber = station + "-" + model.split()[0].upper()
    ds.SoftwareVersions = "1.0"


def _dataset(
    *,
    pixels: np.ndarray,
    device: _Device,
    site: _Site,
    patient: dict[str, str],
    study: dict[str, str],
    station: str,
) -> Dataset:
    sop_class = CR_IMAGE_STORAGE if device.modality == "CR" else DX_PRESENTATION_STORAGE
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""] if device.modality == "DX" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = study["sop_uid"]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study["time"]
    ds.Modality = device.modality
    set_identifying_headers(
        ds,
        patient=patient,
        study=study,
        site=site,
        station=station,
        manufacturer=device.manufacturer,
        model=device.model,
    )
    ds.StudyDescription = f"XR CHEST PA {patient['name'].replace('^', ' ')}"
    ds.SeriesDescription = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.KVP = "120"
    ds.StudyInstanceUID = study["study_uid"]
    ds.SeriesInstanceUID = study["series_uid"]
    ds.StudyID = study["accession"][-6:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    # Image pixel
    max_value = (1 << device.bits_stored) - 1
    data = np.round(pixels * max_value).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = data.shape
    ds.BitsAllocated = 16
    ds.BitsStored = device.bits_stored
    ds.HighBit = device.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = str(max_value // 2)
    ds.WindowWidth = str(max_value)
    ds.BurnedInAnnotation = "NO"
    if device.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "43799004", "SCT", "Chest"
        ds.AnatomicRegionSequence = Sequence([region])
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.DetectorType = "SCINTILLATOR"
        ds.ImagerPixelSpacing = ["0.143", "0.143"]
        ds.PixelSpacing = ["0.143", "0.143"]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Nominal"
        ds.AcquisitionContextSequence = Sequence()
        ds.PositionerType = "COLUMN"
        view = Dataset()
        view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "399348003", "SCT", "postero-anterior"
        view.ViewModifierCodeSequence = Sequence()
        ds.ViewCodeSequence = Sequence([view])
        ds.PerformedProcedureStepStartDate = study["date"]
        ds.PerformedProcedureStepStartTime = study["time"]
    ds.PixelData = data.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds.file_meta.ImplementationVersionName = "RADGATE_DEMO"
    return ds


def write_demo_studies(
    out_dir: Path,
    *,
    patients: int = 40,
    images_per_patient: int = 2,
    seed: int = 0,
    size: int = 128,
    prevalence: float = 0.5,
) -> DemoSet:
    """Write ``patients * images_per_patient`` one-image studies and ``labels.csv`` under ``out_dir``.

    Files go to ``out_dir/<site code>/<patient id>/<accession>.dcm``; each study of a patient
    has its own accession number, date and label. Deterministic for a given ``seed``.
    """
    if patients < 1 or images_per_patient < 1:
        raise ValueError("patients and images_per_patient must be at least 1")
    if size < 16:
        raise ValueError("size must be at least 16 pixels")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files: list[Path] = []
    studies: list[DemoStudy] = []
    base_date = dt.date(2024, 1, 8)
    for p in range(patients):
        site = _SITES[p % len(_SITES)]
        sex = "F" if rng.random() < 0.5 else "M"
        given = str(rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M))
        family = str(rng.choice(_FAMILY))
        age = int(rng.integers(18, 90))
        first_study = base_date + dt.timedelta(days=int(rng.integers(0, 600)))
        birth = first_study - dt.timedelta(days=age * 365 + int(rng.integers(0, 365)))
        patient_id = f"{site.station_prefix}{seed % 100:02d}{p:05d}"
        patient = {
            "name": f"{family}^{given}",
            "id": patient_id,
            "birth_date": birth.strftime("%Y%m%d"),
            "sex": sex,
            "age": str(age),
            "mrn2": f"MRN{int(rng.integers(10**6, 10**7))}",
        }
        for i in range(images_per_patient):
            device = site.devices[int(rng.integers(len(site.devices)))]
            date = first_study + dt.timedelta(days=i * int(rng.integers(20, 200)))
            seconds = int(rng.integers(7 * 3600, 19 * 3600))
            accession = f"A{seed % 100:02d}{p:05d}{i:02d}"
            label = int(rng.random() < prevalence)
            study = {
                "accession": accession,
                "date": date.strftime("%Y%m%d"),
                "time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
                "referrer": str(rng.choice(_PHYSICIANS)),
                "operator": str(rng.choice(_OPERATORS)),
                "study_uid": _uid("study", seed, p, i),
                "series_uid": _uid("series", seed, p, i),
                "sop_uid": _uid("sop", seed, p, i),
            }
            pixels = _chest_image(rng, size, bool(label), device)
            station = f"{site.station_prefix}-XR{1 + site.devices.index(device)}"
            ds = _dataset(
                pixels=pixels, device=device, site=site, patient=patient, study=study, station=station
            )
            path = out_dir / site.station_prefix / patient_id / f"{accession}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            studies.append(
                DemoStudy(
                    path=path,
                    accession_number=accession,
                    patient_id=patient_id,
                    study_instance_uid=study["study_uid"],
                    label=label,
                    sex=sex,
                    age=age,
                    site=site.name,
                    manufacturer=device.manufacturer,
                    model=device.model,
                    modality=device.modality,
                )
            )
    labels_csv = out_dir / "labels.csv"
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "label"])
        for s in studies:
            writer.writerow([s.accession_number, s.label])
    return DemoSet(files=files, labels_csv=labels_csv, studies=studies)
