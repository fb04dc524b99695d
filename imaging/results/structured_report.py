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

import warnings
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

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
    """
    if not 0.0 <= probability <= 1.0:
        raise StructuredReportError("probability must be in [0, 1]")
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(keyword):
            raise StructuredReportError(f"the source instance has no {keyword}")
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid or hd.UID(),
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
    finding_concept = hd.sr.CodedConcept(finding[:16], RADGATE_SCHEME, finding[:64])
    parameters = approval.parameters() if approval else None
    if calibration:
        parameters = [*(parameters or []), f"probability calibration: {calibration}"[:1024]]

    def algorithm_id() -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(
            name=algorithm.name[:64], version=str(algorithm.version)[:64], parameters=parameters
        )

    evaluations = None
    if positive is not None:
        evaluations = [
            hd.sr.QualitativeEvaluation(name=finding_concept, value=_PRESENT if positive else _ABSENT)
        ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"AI finding: {finding}"[:64]),
        finding_type=finding_concept,
        algorithm_id=algorithm_id(),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[
            hd.sr.Measurement(
                name=_PROBABILITY,
                value=round(float(probability), 6),
                unit=codes.UCUM.NoUnits,
                algorithm_id=algorithm_id(),
            )
        ],
        qualitative_evaluations=evaluations,
    )
    groups: list[Any] = [group]
    if region is not None:
        groups.append(_region_group(source, region, finding, finding_concept, algorithm_id(), evaluations))
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    try:
        with warnings.catch_warnings():
            # Pseudonymised names are single-component by design; highdicom warns on each one.
            warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
            sr = hd.sr.ComprehensiveSR(
                evidence=[source],
                content=report[0],
                series_instance_uid=series_instance_uid or hd.UID(),
                series_number=series_number,
                sop_instance_uid=hd.UID(),
                instance_number=instance_number,
                manufacturer=algorithm.manufacturer,
                series_description=_headline(finding, probability, positive, algorithm),
                transfer_syntax_uid=ExplicitVRLittleEndian,
            )
    except (ValueError, TypeError) as exc:
        raise StructuredReportError(f"highdicom refused the report: {exc}") from exc
    scheme = Dataset()  # declare the private scheme (SOP Common, Coding Scheme Identification)
    scheme.CodingSchemeDesignator = RADGATE_SCHEME
    scheme.CodingSchemeName = "RadGate model labels"
    scheme.CodingSchemeResponsibleOrganization = algorithm.manufacturer
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


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
