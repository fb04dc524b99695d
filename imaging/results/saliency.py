"""The saliency map of a classification result as a DICOM Segmentation a viewer overlays.

A FRACTIONAL (PROBABILITY) ``Segmentation`` with one segment, the finding, whose pixel values are
the attribution map scaled to 0-1 on the source image's grid: a viewer draws it over the source
image with its own colour map and opacity, where the Secondary Capture is a separate, already-blended
picture. Same patient and study as the source, a new series, a derivation reference to the source
image, the model as the segment's automatic algorithm (TID 4019 name, version,
approval parameters) and as the equipment (model name, software version, serial number = artifact
hash prefix).

Projection images (CR, DX, SC...) have no frame of reference: the Pixel Measures functional group
is then left out (the IOD needs it only with one) and Patient Orientation is copied from the source.
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from imaging.results.secondary_capture import AlgorithmIdentity, patient_orientation_of
from imaging.results.structured_report import RADGATE_SCHEME, ModelApproval

__all__ = ["SaliencySegmentationError", "attention_region", "build_saliency_segmentation"]

_DEFAULT_SERIES_NUMBER = 9905
_ABNORMAL = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")


class SaliencySegmentationError(ValueError):
    """The map cannot be written as a Segmentation of this source."""


def build_saliency_segmentation(
    source: Dataset,
    heat: np.ndarray,
    algorithm: AlgorithmIdentity,
    *,
    finding: str,
    approval: ModelApproval | None = None,
    series_number: int = _DEFAULT_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """A fractional SEG of ``heat`` (rows x columns of ``source``, any range, scaled to 0-1)."""
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns"):
        if not source.get(keyword):
            raise SaliencySegmentationError(f"the source instance has no {keyword}")
    values = np.asarray(heat, dtype=np.float64)
    if values.shape != (int(source.Rows), int(source.Columns)):
        raise SaliencySegmentationError(
            f"map shape {values.shape} is not the source's {int(source.Rows)}x{int(source.Columns)}"
        )
    if not np.isfinite(values).all():
        raise SaliencySegmentationError("the map has NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if high <= low else (values - low) / (high - low)
    parameters = approval.parameters() if approval else None
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=f"AI attention: {finding}"[:64],
        segmented_property_category=_ABNORMAL,
        segmented_property_type=hd.sr.CodedConcept(finding[:16], RADGATE_SCHEME, finding[:64]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64],
            version=str(algorithm.version)[:64],
            family=codes.DCM.ArtificialIntelligence,
            parameters={"method": algorithm.method[:64], **_as_dict(parameters)},
        ),
    )
    frames = int(source.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise SaliencySegmentationError("multi-frame sources are overlaid by the Secondary Capture only")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            seg = hd.seg.Segmentation(
                source_images=[source],
                pixel_array=scaled[np.newaxis].astype(np.float32),
                segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
                segment_descriptions=[description],
                series_instance_uid=hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer=algorithm.manufacturer,
                manufacturer_model_name=algorithm.name[:64],
                software_versions=str(algorithm.version)[:64],
                device_serial_number=approval.artifact_sha256[:16] if approval else "unregistered",
                fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
                series_description=f"AI attention: {algorithm.label}"[:64],
                content_label="SALIENCY",
                content_description=f"{algorithm.method} map of {finding}"[:64],
                transfer_syntax_uid=ExplicitVRLittleEndian,
                omit_empty_frames=False,
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise SaliencySegmentationError(f"highdicom refused the segmentation: {exc}") from exc
    if "FrameOfReferenceUID" not in source:
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
            del shared.PixelMeasuresSequence  # conditional on a frame of reference (PS3.3 A.51.5)
        orientation = patient_orientation_of(source)
        seg.PatientOrientation = list(orientation) if orientation else ""
    scheme = Dataset()
    scheme.CodingSchemeDesignator = RADGATE_SCHEME
    scheme.CodingSchemeName = "RadGate model labels"
    scheme.CodingSchemeResponsibleOrganization = algorithm.manufacturer
    seg.CodingSchemeIdentificationSequence = [scheme]
    return seg


def _as_dict(parameters: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in parameters or []:
        key, _, value = item.partition(": ")
        out[key[:64]] = value[:64]
    return out


def attention_region(heat: np.ndarray, fraction: float = 0.5) -> np.ndarray | None:
    """The box around the pixels where ``heat`` reaches ``fraction`` of its maximum, as a closed
    polygon of (column, row) pixel-edge coordinates; None for a flat map (no attention anywhere)."""
    values = np.asarray(heat, dtype=np.float64)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise SaliencySegmentationError("the map must be a finite 2D array")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return None
    rows, columns = np.nonzero(values >= low + fraction * (high - low))
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    return np.array(
        [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=np.float64
    )
