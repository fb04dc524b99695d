"""FHIR R4 resources of one served classification result, for the EMR.

One transaction Bundle per result: the model version as a ``Device`` (name, version, the artifact's
SHA-256 as an identifier, the registry's approval as a property), the study as an ``ImagingStudy``
(identified by its Study Instance UID), one ``Observation`` per finding (code, probability as a
quantity, interpretation POS/NEG at the model's threshold, device, derived from the study) and a
``DiagnosticReport`` (status ``preliminary`` until a clinician confirms, then ``final``; its
conclusion says what the reviewer decided). Every entry is a conditional update keyed by an
identifier, so a resent bundle (retry) or the later ``final`` bundle updates the same resources.

Models are ``fhir.resources``' R4B classes (the package ships R4B, not 4.0.1; none of the resources
used here changed between R4 and R4B): built from plain values, validated by pydantic, serialised
by the model. Tests also validate the JSON against the official FHIR R4 JSON schema.

Identifiers follow the profile: ``deidentified`` (default) gives the EMR a keyed pseudonym of the
patient and of the Study Instance UID (HMAC with the project key; stable across results); only
``original``, meant for an honest broker's EMR destination, sends PatientID and the real UIDs.
No name, birth date or accession number ever leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from fhir.resources.R4B.bundle import Bundle

__all__ = [
    "FhirError",
    "FindingFacts",
    "IdentifierProfile",
    "ResultFacts",
    "ReviewOutcome",
    "build_bundle",
    "pseudonymise",
]

SYSTEM = "urn:radgate"
DICOM_UID = "urn:dicom:uid"
_LOINC_IMAGING = {"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}
_RAD = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
_IMAGING = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "imaging",
    "display": "Imaging",
}
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


class FhirError(ValueError):
    """The result cannot be expressed as a valid FHIR bundle."""


class IdentifierProfile(StrEnum):
    DEIDENTIFIED = "deidentified"
    ORIGINAL = "original"  # honest broker's EMR destination only


class ReviewOutcome(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class FindingFacts:
    label: str
    probability: float
    positive: bool
    threshold: float


@dataclass(frozen=True)
class ResultFacts:
    """What a bundle says about one result; identifiers already mapped by the profile."""

    result_id: str  # the request id serving returned (feedback names it)
    patient: str
    study_uid: str
    model_name: str
    model_version: str
    artifact_sha256: str
    approval: str
    alias: str | None
    issued: str
    findings: tuple[FindingFacts, ...]
    result_sop_uids: tuple[str, ...] = ()
    review: ReviewOutcome = ReviewOutcome.PENDING
    reviewed_label: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # Keyed digest of the original PatientID (``serving.interop.emr.erasure_lookup``), kept in
    # the local facts file only, never in a bundle: how an erasure finds a result whose patient
    # the EMR sees under a pseudonym. Empty when the EMR sees the original identifier.
    erasure_lookup: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultFacts:
        values = dict(data)
        values["findings"] = tuple(FindingFacts(**f) for f in values["findings"])
        values["result_sop_uids"] = tuple(values.get("result_sop_uids", ()))
        values["review"] = ReviewOutcome(values.get("review", "pending"))
        return cls(**values)


def pseudonymise(key: bytes, purpose: str, value: str) -> str:
    """A stable keyed pseudonym (hex) of ``value``; without the key it cannot be reversed or guessed."""
    return hmac.new(key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]


def pseudonymous_uid(key: bytes, uid: str) -> str:
    """A DICOM UID (2.25 form) derived from ``uid`` under the key: stable, not reversible."""
    digest = hmac.new(key, f"fhir-uid\0{uid}".encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _uuid(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(parts))}"


def _put(resource: dict[str, Any], full_url: str, system: str, value: str) -> dict[str, Any]:
    kind = resource["resourceType"]
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{kind}?identifier={system}|{value}"},
    }


def build_bundle(facts: ResultFacts) -> Bundle:
    """The transaction Bundle of ``facts`` (validated by the fhir.resources models)."""
    if not facts.findings:
        raise FhirError("a result needs at least one finding")
    status = "preliminary" if facts.review is ReviewOutcome.PENDING else "final"
    patient_ref = {"identifier": {"system": f"{SYSTEM}:patient", "value": facts.patient}}
    model_key = f"{facts.model_name}/{facts.model_version}"
    device_url = _uuid("device", model_key, facts.artifact_sha256)
    study_url = _uuid("study", facts.study_uid)
    report_url = _uuid("report", facts.result_id)
    device = {
        "resourceType": "Device",
        "identifier": [
            {"system": f"{SYSTEM}:model", "value": model_key},
            {"system": f"{SYSTEM}:artifact-sha256", "value": facts.artifact_sha256},
        ],
        "status": "active",
        "manufacturer": "RadGate",
        "deviceName": [{"name": facts.model_name, "type": "model-name"}],
        "version": [{"value": facts.model_version}],
        "property": [
            {
                "type": {"coding": [{"system": f"{SYSTEM}:device-property", "code": "approval"}]},
                "valueCode": [
                    {
                        "coding": [{"system": f"{SYSTEM}:approval", "code": facts.approval}],
                        "text": facts.approval + (f" (alias {facts.alias})" if facts.alias else ""),
                    }
                ],
            }
        ],
        "type": {"text": "AI model (software as a medical device)"},
    }
    study = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID, "value": f"urn:oid:{facts.study_uid}"}],
        "status": "available",
        "subject": patient_ref,
    }
    entries = [
        _put(device, device_url, f"{SYSTEM}:model", model_key),
        _put(study, study_url, DICOM_UID, f"urn:oid:{facts.study_uid}"),
    ]
    observation_refs = []
    for finding in facts.findings:
        obs_id = f"{facts.result_id}:{finding.label}"
        obs_url = _uuid("observation", obs_id)
        observation = {
            "resourceType": "Observation",
            "identifier": [{"system": f"{SYSTEM}:observation", "value": obs_id}],
            "status": status,
            "category": [{"coding": [_IMAGING]}],
            "code": {
                "coding": [{"system": f"{SYSTEM}:finding", "code": finding.label, "display": finding.label}],
                "text": f"AI finding: {finding.label}",
            },
            "subject": patient_ref,
            "issued": facts.issued,
            "device": {"reference": device_url},
            "derivedFrom": [{"reference": study_url}],
            "valueQuantity": {
                "value": round(float(finding.probability), 6),
                "unit": "probability",
                "system": "http://unitsofmeasure.org",
                "code": "1",
            },
            "interpretation": [
                {
                    "coding": [
                        {
                            "system": _INTERPRETATION,
                            "code": "POS" if finding.positive else "NEG",
                            "display": "Positive" if finding.positive else "Negative",
                        }
                    ]
                }
            ],
            "referenceRange": [{"text": f"positive at probability >= {finding.threshold:g}"}],
            "method": {"text": f"{facts.model_name} v{facts.model_version}"},
        }
        entries.append(_put(observation, obs_url, f"{SYSTEM}:observation", obs_id))
        observation_refs.append({"reference": obs_url})
    report = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": f"{SYSTEM}:result", "value": facts.result_id}],
        "status": status,
        "category": [{"coding": [_RAD]}],
        "code": {"coding": [_LOINC_IMAGING], "text": f"AI result: {facts.model_name} v{facts.model_version}"},
        "subject": patient_ref,
        "issued": facts.issued,
        "imagingStudy": [{"reference": study_url}],
        "result": observation_refs,
        "conclusion": _conclusion(facts),
    }
    entries.append(_put(report, report_url, f"{SYSTEM}:result", facts.result_id))
    try:
        return Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    except ValueError as exc:
        raise FhirError(f"the FHIR models refused the bundle: {str(exc)[:300]}") from exc


def _conclusion(facts: ResultFacts) -> str:
    shown = "; ".join(
        f"{f.label} {'present' if f.positive else 'absent'} (p={f.probability:.3f})" for f in facts.findings
    )
    text = f"AI ({facts.model_name} v{facts.model_version}, {facts.approval}): {shown}."
    if facts.review is ReviewOutcome.CONFIRMED:
        return text + " Confirmed by a clinical reviewer."
    if facts.review is ReviewOutcome.OVERRIDDEN:
        return text + f" Overridden by a clinical reviewer: {facts.reviewed_label}."
    return text + " Preliminary: not yet reviewed."


def now_instant() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
