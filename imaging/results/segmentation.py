"""DICOM results of a 3D segmentation model: a Segmentation (SEG) and a volumetric SR.

:func:`build_segmentation` writes a highdicom BINARY ``Segmentation`` of the source series
(FRACTIONAL OCCUPANCY 0/100 % where bit-packed frames would not be byte-aligned): same
patient and study (copied from the sources), a new series, the source frame of reference, one
segment per structure (coded anatomy from SNOMED CT where the structure name has a code in
pydicom's dictionary, else RadGate's private scheme), the model as automatic algorithm
(name, version) and one derivation reference per frame to the source slice it was computed from.

:func:`build_volume_report` writes a TID 1500 ``Comprehensive3DSR``: one volumetric ROI group per
structure with its volume in mL (SCT "Volume", UCUM ``ml``), the segment it measures and the
algorithm. :func:`build_segmentation_results` builds both.

``labels[z]`` must belong to ``sources[z]`` (the order of :class:`imaging.volumes.Volume`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from imaging.results.secondary_capture import AlgorithmIdentity
from imaging.results.structured_report import RADGATE_SCHEME

__all__ = [
    "SegmentationResultError",
    "build_segmentation",
    "build_segmentation_results",
    "build_volume_report",
    "structure_code",
]

_SEG_SERIES_NUMBER = 9903
_SR_SERIES_NUMBER = 9904
_MILLILITER = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
_IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging")
_SIDES = re.compile(r"(^|[\s_-])(left|right|l|r)($|[\s_-])", re.IGNORECASE)
# Colours for up to 10 segments (CIELab via highdicom from RGB), cycled beyond.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


class SegmentationResultError(ValueError):
    """The labels cannot be written as DICOM results of these sources (the message says why)."""


def structure_code(name: str) -> tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]:
    """(category, type) of a structure: SCT anatomy when its name has a code, else private."""
    base = _SIDES.sub(" ", name).strip(" _-")
    keyword = "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"[\s_-]+", base) if part)
    try:
        code = getattr(codes.SCT, keyword)
    except AttributeError:
        code = None
    if code is not None:
        return (
            hd.sr.CodedConcept.from_code(codes.SCT.AnatomicalStructure),
            hd.sr.CodedConcept.from_code(code),
        )
    return (
        hd.sr.CodedConcept.from_code(codes.SCT.Tissue),
        hd.sr.CodedConcept(name[:16], RADGATE_SCHEME, name[:64]),
    )


def _check(sources: Sequence[Dataset], labels: np.ndarray, structures: Mapping[int, str]) -> None:
    if not sources:
        raise SegmentationResultError("no source instances")
    if labels.ndim != 3 or labels.shape[0] != len(sources):
        raise SegmentationResultError(
            f"labels {labels.shape} do not match {len(sources)} source slices (expected (Z, Y, X))"
        )
    if sorted(structures) != list(range(1, len(structures) + 1)):
        raise SegmentationResultError("structure labels must be 1..K")
    if labels.size and int(labels.max()) > len(structures):
        raise SegmentationResultError(f"label value {int(labels.max())} has no structure name")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        if any(not s.get(keyword) for s in sources):
            raise SegmentationResultError(f"a source instance has no {keyword}")
    if len({str(s.SeriesInstanceUID) for s in sources}) != 1:
        raise SegmentationResultError("the source instances belong to more than one series")
    shapes = {(int(s.Rows), int(s.Columns)) for s in sources}
    if shapes != {tuple(labels.shape[1:])}:
        raise SegmentationResultError(f"labels {labels.shape[1:]} do not match the slice size {shapes}")


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        # Pseudonymised names are single-component by design; highdicom warns on each one.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        yield


def build_segmentation(
    sources: Sequence[Dataset],
    labels: np.ndarray,
    structures: Mapping[int, str],
    algorithm: AlgorithmIdentity,
    *,
    series_instance_uid: str | None = None,
    series_number: int = _SEG_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """A DICOM Segmentation of ``labels`` (``(Z, Y, X)``, values 0..K) over ``sources``: BINARY,
    or FRACTIONAL (OCCUPANCY, 0 or 100 %) when a slice's pixel count is not a multiple of 8."""
    labels = np.asarray(labels)
    _check(sources, labels, structures)
    # BINARY frames are bit-packed back to back: with rows x columns not a multiple of 8 they do
    # not start on a byte boundary, and OHIF 3 draws such frames garbled (Orthanc will not serve
    # them one by one either). A byte per pixel, same content, shows right in both.
    aligned = labels.shape[1] * labels.shape[2] % 8 == 0
    encoding = hd.seg.SegmentationTypeValues.BINARY if aligned else hd.seg.SegmentationTypeValues.FRACTIONAL
    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64],
        version=str(algorithm.version)[:64],
        family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = []
    for number, name in sorted(structures.items()):
        category, kind = structure_code(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
                tracking_uid=hd.UID(),
                tracking_id=f"{algorithm.name} {name}"[:64],
                display_color=hd.color.CIELabColor(*_lab(_PALETTE[(number - 1) % len(_PALETTE)])),
            )
        )
    try:
        with _quiet():
            seg = hd.seg.Segmentation(
                source_images=list(sources),
                pixel_array=labels.astype(np.uint8, copy=False),
                segmentation_type=encoding,
                fractional_type=hd.seg.SegmentationFractionalTypeValues.OCCUPANCY,
                segment_descriptions=descriptions,
                series_instance_uid=series_instance_uid or hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer=algorithm.manufacturer,
                manufacturer_model_name=algorithm.name[:64],
                software_versions=str(algorithm.version)[:64],
                device_serial_number=str(algorithm.version)[:64],
                series_description=f"AI segmentation: {algorithm.label}"[:64],
                content_label="AI_SEG",
                content_description=f"{algorithm.label}"[:64],
                transfer_syntax_uid=ExplicitVRLittleEndian,
                omit_empty_frames=True,
            )
    except (ValueError, TypeError) as exc:
        raise SegmentationResultError(f"highdicom refused the segmentation: {exc}") from exc
    return seg


def _lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """sRGB (0-255) -> CIELab (D65), what highdicom's ``CIELabColor`` takes."""
    linear = [((c / 255 + 0.055) / 1.055) ** 2.4 if c / 255 > 0.04045 else c / 255 / 12.92 for c in rgb]
    r, g, b = linear
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def build_volume_report(
    sources: Sequence[Dataset],
    segmentation: Dataset,
    volumes_ml: Mapping[str, float],
    algorithm: AlgorithmIdentity,
    *,
    series_instance_uid: str | None = None,
    series_number: int = _SR_SERIES_NUMBER,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report: each segment's volume (mL), referencing the segment in ``segmentation``."""
    if not sources:
        raise SegmentationResultError("no source instances")
    segments = {str(item.SegmentLabel): item for item in segmentation.SegmentSequence}
    missing = sorted(set(volumes_ml) - set(segments))
    if missing:
        raise SegmentationResultError(f"{len(missing)} structure(s) have no segment in the segmentation")
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name[:64], version=str(algorithm.version)[:64]
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=algorithm.name[:64], manufacturer_name=algorithm.manufacturer
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    source_series = hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID))
    groups = []
    for name, volume in volumes_ml.items():
        if not np.isfinite(volume) or volume < 0:
            raise SegmentationResultError("volumes must be finite and non-negative")
        item = segments[name]
        number = int(item.SegmentNumber)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=str(item.get("TrackingUID") or hd.UID()), identifier=f"{name} volume"[:64]
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(segmentation.SOPClassUID),
                    sop_instance_uid=str(segmentation.SOPInstanceUID),
                    segment_number=number,
                    source_series=source_series,
                ),
                finding_type=structure_code(name)[1],
                algorithm_id=algorithm_id,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume,
                        value=round(float(volume), 3),
                        unit=_MILLILITER,
                        algorithm_id=algorithm_id,
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=_IMAGING_PROCEDURE, imaging_measurements=groups
    )
    try:
        with _quiet():
            sr = hd.sr.Comprehensive3DSR(
                evidence=[*sources, segmentation],
                content=report[0],
                series_instance_uid=series_instance_uid or hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer=algorithm.manufacturer,
                series_description=f"AI volumes: {algorithm.label}"[:64],
                transfer_syntax_uid=ExplicitVRLittleEndian,
            )
    except (ValueError, TypeError) as exc:
        raise SegmentationResultError(f"highdicom refused the report: {exc}") from exc
    scheme = Dataset()
    scheme.CodingSchemeDesignator = RADGATE_SCHEME
    scheme.CodingSchemeName = "RadGate model labels"
    scheme.CodingSchemeResponsibleOrganization = algorithm.manufacturer
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def build_segmentation_results(
    sources: Sequence[Dataset],
    labels: np.ndarray,
    structures: Mapping[int, str],
    volumes_ml: Mapping[str, float],
    algorithm: AlgorithmIdentity,
) -> tuple[hd.seg.Segmentation, hd.sr.Comprehensive3DSR]:
    """The SEG and its volume SR (see the module docstring)."""
    seg = build_segmentation(sources, labels, structures, algorithm)
    return seg, build_volume_report(sources, seg, volumes_ml, algorithm)
