"""DICOM Comprehensive SR (TID 1500 Measurement Report) of one AI classification result, in the
shape IHE AI Results (AIR) asks for.

One measurement group per result: the finding type (coded in RadGate's private scheme
``99RADGATE`` with the model's label as code value), a qualitative evaluation of that finding
(SCT Present / Absent at the model's operating threshold), the model's probability as a numeric
measurement, the algorithm (TID 4019: name, version, and as its parameters the registry's model
version, artifact SHA-256 and approval), and the source image it was computed from. The observer is
the model as a device (TID 1004: UID, name, manufacturer, model name, serial number = artifact
hash prefix). Same study as the source, new series; serving sends it back to the PACS next to the
overlay objects.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import highdicom as hd
import numpy as np
from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map
from highdicom.enum import PatientSexValues
from highdicom.valuerep import _check_long_string, _check_specific_character_set
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import DA, TM

from imaging.results.secondary_capture import AlgorithmIdentity

__all__ = ["RADGATE_SCHEME", "ModelApproval", "StructuredReportError", "build_result_report"]

#: Private coding scheme for model labels and RadGate concepts (PS3.16 8.2: "99" prefix).
RADGATE_SCHEME = "99RADGATE"
_PROBABILITY = hd.sr.CodedConcept("PROB", RADGATE_SCHEME, "Model probability of finding")
_IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging")
_PRESENT = hd.sr.CodedConcept("52101004", "SCT", "Present")
_ABSENT = hd.sr.CodedConcept("2667000", "SCT", "Absent")
_DEFAULT_SERIES_NUMBER = 9902


class StructuredReportError(ValueError):
    """The result cannot be written as an SR of this source."""


@dataclass(frozen=True)
class ModelApproval:
    """What the model registry says about the model version that produced a result."""

    model_version: str
    artifact_sha256: str
    status: str  # e.g. approved
    alias: str | None = None  # e.g. production

    def parameters(self) -> list[str]:
        """TID 4019 Algorithm Parameters (TEXT content items)."""
        out = [f"model version: {self.model_version}", f"artifact sha256: {self.artifact_sha256}"]
        out.append(f"approval: {self.status}" + (f" (alias {self.alias})" if self.alias else ""))
        return out


def build_result_report(
    source: Dataset,
    algorithm: AlgorithmIdentity,
    *,
    finding: str,
    probability: float,
    series_instance_uid: str | None = None,
    series_number: int = _DEFAULT_SERIES_NUMBER,
    instance_number: int = 1,
    device_uid: str | None = None,
    approval: ModelApproval | None = None,
    positive: bool | None = None,
    calibration: str | None = None,
    region: np.ndarray | None = None,
) -> hd.sr.ComprehensiveSR:
    """An SR stating ``finding`` with ``probability`` (0-1) by ``algorithm`` for ``source``.

    ``positive`` (the decision at the model's threshold) adds the qualitative evaluation Present or
    Absent; ``approval`` adds the registry's model version, artifact hash and approval to the
    algorithm identification and the device observer; ``calibration`` (e.g. "temperature scaling,
    T=0.84, fitted on validation") says how ``probability`` was calibrated, as one more algorithm
    parameter. ``region`` (a closed polygon, ``(N, 2)`` column/row pixel coordinates of ``source``:
    where the explanation map concentrates) adds a planar ROI group (TID 1410) with the same
    finding, so a viewer draws the finding where the model looked.

    The content tree is highdicom's, built once per model and finding (:class:`_ContentTemplate`);
    a report copies the containers that hold its own values and shares the model's constant
    items with the other reports of that model, so write the returned dataset, do not edit it.
    The document around it is what ``hd.sr.ComprehensiveSR`` makes of the same tree with
    ``evidence=[source]`` (:func:`_document`), without its deep copy and tree searches.
    """
    if not 0.0 <= probability <= 1.0:
        raise StructuredReportError("probability must be in [0, 1]")
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(keyword):
            raise StructuredReportError(f"the source instance has no {keyword}")
    try:
        template = _template(_TemplateKey(algorithm, approval, finding, positive, calibration))
    except (ValueError, TypeError) as exc:
        raise StructuredReportError(f"highdicom refused the report: {exc}") from exc
    extra: list[Dataset] = []
    if region is not None:  # a group template holds its one container item
        extra.extend(
            _region_group(
                source, region, finding, template.finding, template.algorithm_id, template.evaluations
            )
        )
    try:
        with warnings.catch_warnings():
            # Pseudonymised names are single-component by design; highdicom warns on each one.
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            content = template.fill(
                source, probability, device_uid=device_uid or hd.UID(), extra_groups=extra
            )
            sr = _document(
                source,
                content,
                series_instance_uid=series_instance_uid or hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=instance_number,
                manufacturer=algorithm.manufacturer,
                series_description=_headline(finding, probability, positive, algorithm),
            )
    except (ValueError, TypeError) as exc:
        raise StructuredReportError(f"highdicom refused the report: {exc}") from exc
    scheme = Dataset()  # declare the private scheme (SOP Common, Coding Scheme Identification)
    scheme.CodingSchemeDesignator = RADGATE_SCHEME
    scheme.CodingSchemeName = "RadGate model labels"
    scheme.CodingSchemeResponsibleOrganization = algorithm.manufacturer
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


@dataclass(frozen=True)
class _TemplateKey:
    """What a report's content tree depends on, besides the instance's own values."""

    algorithm: AlgorithmIdentity
    approval: ModelApproval | None
    finding: str
    positive: bool | None
    calibration: str | None


def _content_tree(
    source: Dataset,
    key: _TemplateKey,
    *,
    probability: float,
    device_uid: str,
    region_groups: Sequence[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations] = (),
) -> hd.sr.MeasurementReport:
    """The TID 1500 content tree of one result, every item made by highdicom."""
    algorithm, approval, finding = key.algorithm, key.approval, key.finding
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid,
        name=algorithm.name[:64],
        manufacturer_name=algorithm.manufacturer,
        model_name=algorithm.name[:64],
        serial_number=approval.artifact_sha256[:16] if approval else None,
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    finding_concept = _finding_concept(finding)
    algorithm_id = _algorithm_id(key)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"AI finding: {finding}"[:64]),
        finding_type=finding_concept,
        algorithm_id=algorithm_id,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[
            hd.sr.Measurement(
                name=_PROBABILITY,
                value=round(float(probability), 6),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm_id,
            )
        ],
        qualitative_evaluations=_evaluations(key),
    )
    return hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_IMAGING_PROCEDURE,
        imaging_measurements=[group, *region_groups],
    )


def _finding_concept(finding: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(finding[:16], RADGATE_SCHEME, finding[:64])


def _algorithm_id(key: _TemplateKey) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name, version and, as parameters, the approval and the calibration."""
    parameters = key.approval.parameters() if key.approval else None
    if key.calibration:
        parameters = [*(parameters or []), f"probability calibration: {key.calibration}"[:1024]]
    return hd.sr.AlgorithmIdentification(
        name=key.algorithm.name[:64], version=str(key.algorithm.version)[:64], parameters=parameters
    )


def _evaluations(key: _TemplateKey) -> list[hd.sr.QualitativeEvaluation] | None:
    if key.positive is None:
        return None
    value = _PRESENT if key.positive else _ABSENT
    return [hd.sr.QualitativeEvaluation(name=_finding_concept(key.finding), value=value)]


#: A stand-in source for building templates; every report replaces its reference.
_PLACEHOLDER_SOURCE = Dataset()
_PLACEHOLDER_SOURCE.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
_PLACEHOLDER_SOURCE.SOPInstanceUID = "1.2.3.4"
_PLACEHOLDER_SOURCE.Modality = "OT"
_PLACEHOLDER_SOURCE.Rows = _PLACEHOLDER_SOURCE.Columns = 1
_CONTENT_SEQUENCE = Tag(0x0040, 0xA730)


def _position(items: Sequence[Dataset], value_type: str, code: str) -> int:
    """Index of the one item of ``value_type`` whose concept name is ``code``."""
    found = [
        i
        for i, item in enumerate(items)
        if item.ValueType == value_type and item.ConceptNameCodeSequence[0].CodeValue == code
    ]
    if len(found) != 1:
        raise TypeError(f"the report template has {len(found)} {value_type} items {code}")
    return found[0]


class _ContentTemplate:
    """One model's content tree, built by highdicom once, and where each report's values go.

    A report gets fresh copies of the three containers on the way to its values (the root, Imaging
    Measurements, its Measurement Group) and fresh items for the values themselves (device observer
    UID, tracking UID, probability, source image); every other item is this template's.
    """

    def __init__(self, key: _TemplateKey) -> None:
        self.finding = _finding_concept(key.finding)
        self.algorithm_id = _algorithm_id(key)
        self.evaluations = _evaluations(key)
        tree = _content_tree(_PLACEHOLDER_SOURCE, key, probability=0.0, device_uid=hd.UID())
        self.root: Dataset = tree[0]
        children = self.root.ContentSequence
        self.device_at = _position(children, "UIDREF", "121012")  # Device Observer UID
        self.measurements_at = _position(children, "CONTAINER", "126010")  # Imaging Measurements
        (self.group,) = children[self.measurements_at].ContentSequence
        members = self.group.ContentSequence
        self.tracking_at = _position(members, "UIDREF", "112040")  # Tracking Unique Identifier
        self.probability_at = _position(members, "NUM", _PROBABILITY.value)
        self.source_at = _position(members, "IMAGE", "121112")  # Source of Measurement
        self.device = cast(hd.sr.UIDRefContentItem, children[self.device_at])
        self.tracking = cast(hd.sr.UIDRefContentItem, members[self.tracking_at])

    def fill(
        self,
        source: Dataset,
        probability: float,
        *,
        device_uid: str,
        extra_groups: Sequence[Dataset] = (),
    ) -> Dataset:
        """The root content item of ``source``'s report."""
        members = list(self.group.ContentSequence)
        members[self.tracking_at] = _uid_item(self.tracking, hd.UID())
        members[self.probability_at] = _probability_item(members[self.probability_at], probability)
        members[self.source_at] = hd.sr.SourceImageForMeasurementGroup.from_source_image(source)
        children = list(self.root.ContentSequence)
        children[self.device_at] = _uid_item(self.device, device_uid)
        measurements = children[self.measurements_at]
        children[self.measurements_at] = _container(
            measurements, [_container(self.group, members), *extra_groups]
        )
        return _container(self.root, children)


@functools.lru_cache(maxsize=64)
def _template(key: _TemplateKey) -> _ContentTemplate:
    return _ContentTemplate(key)


def _container(item: Dataset, children: list[Dataset]) -> Dataset:
    """A new item with ``item``'s attributes and ``children`` as its content."""
    fresh = Dataset()
    for tag, element in item.items():
        if tag != _CONTENT_SEQUENCE:
            fresh[tag] = element
    fresh.ContentSequence = children
    return fresh


def _uid_item(item: hd.sr.UIDRefContentItem, uid: str) -> hd.sr.UIDRefContentItem:
    """The template's UIDREF item with ``uid`` as its value."""
    return hd.sr.UIDRefContentItem(name=item.name, value=uid, relationship_type=item.relationship_type)


def _probability_item(item: Dataset, probability: float) -> hd.sr.NumContentItem:
    """The template's NUM item (TID 300) with ``probability`` as its value."""
    fresh = hd.sr.NumContentItem(
        name=_PROBABILITY,
        value=round(float(probability), 6),
        unit=codes.UCUM.NoUnits,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    fresh.ContentSequence = item.ContentSequence  # the algorithm identification
    return fresh


#: hd.SOPClass: the File Meta Information highdicom writes.
_HIGHDICOM_IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.7433.1.1"
_COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


class _ResultReport(hd.sr.ComprehensiveSR):
    """A Comprehensive SR made by :func:`_document`: its highdicom view of the content tree
    (``content``) is parsed from a copy when first asked for."""

    @property
    def content(self) -> hd.sr.ContentSequence:
        view = self.__dict__.get("_content")
        if view is None:
            view = hd.sr.ComprehensiveSR.from_dataset(self, copy=True).content
            self.__dict__["_content"] = view
        return view


def _document(
    source: Dataset,
    content: Dataset,
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    instance_number: int,
    manufacturer: str,
    series_description: str,
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR document that ``hd.sr.ComprehensiveSR(evidence=[source],
    content=content, ...)`` makes (same attributes, same values, tests compare them), built
    directly: the evidence is ``source`` itself, no search of the tree for references, no copy
    of the tree, and the IOD's attribute tables are read once per source SOP class."""
    if series_number < 1 or instance_number < 1:
        raise ValueError("series and instance numbers must be positive integers")
    _check_long_string(series_description)
    _check_long_string(manufacturer)
    copied = _patient_and_study_tags(str(source.SOPClassUID))

    sr = Dataset()
    sr.preamble = b"\x00" * 128
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID(_COMPREHENSIVE_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.ImplementationClassUID = UID(_HIGHDICOM_IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = f"highdicom{hd.__version__}"
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    meta.FileMetaInformationGroupLength = len(buffer.getvalue())
    sr.file_meta = meta

    # What highdicom's SOPClass sets from the evidence (and checks) before the module copy below.
    sr.PatientID = source.PatientID
    sr.PatientName = source.PatientName
    sr.PatientBirthDate = DA(source.PatientBirthDate)
    sex = source.PatientSex
    sr.PatientSex = PatientSexValues(sex).value if sex is not None and sex != "" else sex
    sr.StudyInstanceUID = str(source.StudyInstanceUID)
    sr.AccessionNumber = source.AccessionNumber
    sr.StudyID = source.StudyID
    sr.StudyDate = DA(source.StudyDate) if source.StudyDate is not None else None
    sr.StudyTime = TM(source.StudyTime) if source.StudyTime is not None else None
    sr.ReferringPhysicianName = source.get("ReferringPhysicianName")
    for tag in copied:  # Patient and Study IE modules of the source's IOD, as present
        element = source.get(tag)
        if element is not None:
            sr.add(element)
    sr.SeriesInstanceUID = str(series_instance_uid)
    sr.SeriesNumber = series_number
    sr.Modality = "SR"
    sr.SeriesDescription = series_description
    sr.Manufacturer = manufacturer
    sr.SOPInstanceUID = str(sop_instance_uid)
    sr.SOPClassUID = _COMPREHENSIVE_SR
    sr.InstanceNumber = instance_number
    now = datetime.datetime.now()
    sr.InstanceCreationDate = DA(now.date())
    sr.InstanceCreationTime = TM(now.time())
    charset = source.get("SpecificCharacterSet")
    if charset is not None:
        sr.SpecificCharacterSet = _check_specific_character_set(charset)
    sr.ContentDate = DA(now.date())
    sr.ContentTime = TM(now.time())
    sr.CompletionFlag = "PARTIAL"
    sr.VerificationFlag = "UNVERIFIED"
    sr.PreliminaryFlag = "PRELIMINARY"
    for tag, root_element in content.items():  # the root item's attributes are the document's
        sr[tag] = root_element
    instance = Dataset()
    instance.ReferencedSOPClassUID = source.SOPClassUID
    instance.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    sr.CurrentRequestedProcedureEvidenceSequence = [study]
    sr.PerformedProcedureCodeSequence = []
    sr.ReferencedPerformedProcedureStepSequence = []
    equipment: list[Dataset] = []
    # Not an image, or no manufacturer: highdicom leaves the acquisition equipment out too.
    with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
        equipment.append(hd.ContributingEquipment.for_image_acquisition(source))
    equipment.append(hd.ContributingEquipment.for_highdicom())
    sr.ContributingEquipmentSequence = equipment
    sr.__class__ = _ResultReport
    return cast(hd.sr.ComprehensiveSR, sr)


@functools.lru_cache(maxsize=256)
def _patient_and_study_tags(sop_class_uid: str) -> tuple[BaseTag, ...]:
    """Root attributes of the Patient and Study IE modules of an IOD (what highdicom copies);
    KeyError for a SOP class it does not know, as highdicom."""
    iod = get_sop_class_iod_map()[sop_class_uid]
    attributes = get_module_attribute_map()
    tags: list[BaseTag] = []
    for ie in ("Patient", "Study"):
        for module in get_iod_module_map()[iod]:
            if module["ie"] != ie:
                continue
            for item in attributes[module["key"]]:
                if len(item["path"]) == 0:
                    tag = tag_for_keyword(str(item["keyword"]))
                    if tag is None:
                        raise ValueError(f"no tag for keyword {item['keyword']!r}")
                    tags.append(Tag(tag))
    return tuple(tags)


def _headline(finding: str, probability: float, positive: bool | None, algorithm: AlgorithmIdentity) -> str:
    """The series description: what a viewer's study browser shows of the result at a glance."""
    verdict = "" if positive is None else (" present" if positive else " absent")
    return f"AI: {finding}{verdict} (p={probability:.2f}), {algorithm.label}"[:64]


def _region_group(
    source: Dataset,
    region: np.ndarray,
    finding: str,
    finding_concept: hd.sr.CodedConcept,
    algorithm_id: hd.sr.AlgorithmIdentification,
    evaluations: list[hd.sr.QualitativeEvaluation] | None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group: the attention region as a closed POLYLINE on the source image."""
    points = np.asarray(region, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not 3 <= len(points) <= 1024:
        raise StructuredReportError("region must be 3 to 1024 (column, row) points")
    rows, columns = int(source.get("Rows", 0) or 0), int(source.get("Columns", 0) or 0)
    if (
        not np.isfinite(points).all()
        or (points < 0).any()
        or (points[:, 0] > columns).any()
        or (points[:, 1] > rows).any()
    ):
        raise StructuredReportError("region points must lie on the source image")
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])  # closed: first point repeated last
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"AI attention: {finding}"[:64]
        ),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=points,
            source_image=hd.sr.SourceImageForRegion.from_source_image(source),
        ),
        finding_type=finding_concept,
        algorithm_id=algorithm_id,
        qualitative_evaluations=evaluations,
    )
