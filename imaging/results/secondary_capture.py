"""DICOM Secondary Capture of an attribution overlay, for PACS users (IHE AI Results style).

The SC is derived from the source instance: same patient and study (copied from the source by
highdicom), a new series, a Source Image Sequence reference with purpose "Source image for image
processing operation", and the model named in the Contributing Equipment Sequence (purpose
"Processing Equipment": manufacturer, model name = model, software version = model version) and in
the SC Equipment module. No text is burned into the pixels; viewers show the series description.
"""

from __future__ import annotations

import datetime
import warnings
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

__all__ = [
    "AlgorithmIdentity",
    "SecondaryCaptureError",
    "build_overlay_secondary_capture",
    "patient_orientation_of",
    "write_secondary_capture",
]

_DEFAULT_SERIES_NUMBER = 9901


class SecondaryCaptureError(ValueError):
    """The overlay cannot be written as a Secondary Capture of this source."""


@dataclass(frozen=True)
class AlgorithmIdentity:
    """The AI model that produced a result, as named in DICOM results (no patient data)."""

    name: str
    version: str
    method: str
    manufacturer: str = "RadGate"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # +x, +y, +z of the patient system


def _letters_for(direction: np.ndarray) -> str:
    """Patient orientation letters of a direction cosine vector, dominant axis first."""
    letters = ""
    for axis in np.argsort(-np.abs(direction)):
        if abs(direction[axis]) < 0.25 or len(letters) == 2:
            break
        positive, negative = _AXIS_LETTERS[int(axis)]
        letters += positive if direction[axis] > 0 else negative
    return letters


def patient_orientation_of(source: Dataset) -> tuple[str, str] | None:
    """(row direction, column direction) letters from Patient Orientation or Image Orientation."""
    value = source.get("PatientOrientation")
    if value and len(value) == 2 and all(value):
        return str(value[0]), str(value[1])
    cosines = source.get("ImageOrientationPatient")
    if cosines is not None and len(cosines) == 6:
        vector = np.asarray([float(c) for c in cosines])
        row, column = _letters_for(vector[:3]), _letters_for(vector[3:])
        if row and column:
            return row, column
    return None


def _pixel_spacing(source: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = source.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    return None


def build_overlay_secondary_capture(
    source: Dataset,
    rgb: np.ndarray,
    algorithm: AlgorithmIdentity,
    *,
    series_instance_uid: str | None = None,
    series_number: int = _DEFAULT_SERIES_NUMBER,
    instance_number: int = 1,
    sop_instance_uid: str | None = None,
    frame: int | None = None,
    comments: str | None = None,
) -> hd.sc.SCImage:
    """An RGB Secondary Capture of ``rgb`` (rows, columns, 3; uint8) derived from ``source``.

    ``frame`` (1-based) is referenced when the source is multi-frame. ``comments`` (e.g. the
    clinician summary) goes into Image Comments. Pixel spacing is copied when the overlay has the
    source's matrix size.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SecondaryCaptureError("the overlay must be an RGB uint8 array (rows, columns, 3)")
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(keyword):
            raise SecondaryCaptureError(f"the source instance has no {keyword}")
    orientation = patient_orientation_of(source)
    same_matrix = (rgb.shape[0], rgb.shape[1]) == (source.get("Rows"), source.get("Columns"))
    equipment = hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=str(algorithm.version)[:64],
        contribution_datetime=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
        contribution_description=f"{algorithm.method} attribution overlay"[:64],
    )
    try:
        with warnings.catch_warnings():
            # Pseudonymised names are single-component by design; highdicom warns on each one.
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            image = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=source,
                pixel_array=np.ascontiguousarray(rgb),
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=series_instance_uid or hd.UID(),
                series_number=series_number,
                sop_instance_uid=sop_instance_uid or hd.UID(),
                instance_number=instance_number,
                manufacturer=algorithm.manufacturer,
                pixel_spacing=_pixel_spacing(source) if same_matrix else None,  # type: ignore[arg-type]
                patient_orientation=orientation or ("L", "F"),
                transfer_syntax_uid=ExplicitVRLittleEndian,
                contributing_equipment=[equipment],
                series_description=f"AI {algorithm.method}: {algorithm.label}"[:64],
            )
    except (ValueError, TypeError) as exc:
        raise SecondaryCaptureError(f"highdicom refused the overlay: {exc}") from exc
    if orientation is None:
        image.PatientOrientation = None  # type: ignore[assignment]  # Type 2, empty
    # Laterality (General Series, Type 2C): the source's when it has one; absent for a named
    # body part without it (unpaired); empty, i.e. unknown, when the body part is not named.
    sides = [source.get(k) for k in ("Laterality", "ImageLaterality")]
    laterality = next((side for side in sides if side in ("R", "L")), None)  # U, B: not a series side
    if source.get("BodyPartExamined"):
        image.BodyPartExamined = source.BodyPartExamined
    if laterality:
        image.Laterality = laterality
    elif not source.get("BodyPartExamined"):
        image.Laterality = None  # type: ignore[assignment]
    elif "Laterality" in image:
        del image.Laterality
    image.ConversionType = "WSD"
    image.SecondaryCaptureDeviceManufacturer = algorithm.manufacturer
    image.SecondaryCaptureDeviceManufacturerModelName = algorithm.name[:64]
    image.SecondaryCaptureDeviceSoftwareVersions = str(algorithm.version)[:64]
    image.BurnedInAnnotation = "NO"
    image.DerivationDescription = (
        f"{algorithm.method} attribution map of {algorithm.label} blended on the windowed source image"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if frame is not None and int(source.get("NumberOfFrames", 1) or 1) > 1:
        reference.ReferencedFrameNumber = frame
    reference.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    image.SourceImageSequence = [reference]
    if comments:
        image.ImageComments = comments[:10240]
    return image


def write_secondary_capture(image: Dataset, path: Path | str) -> Path:
    """Save a result object (SC, SR...) as a Part 10 file (atomically: temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    image.save_as(temporary, enforce_file_format=True)
    temporary.replace(target)
    return target
