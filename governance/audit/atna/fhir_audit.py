"""The audit chain as FHIR R4 AuditEvent resources, after the IHE Basic Audit Log Patterns (BALP).

Each entry becomes one AuditEvent: ``type`` and ``subtype`` are the DICOM event codes of its
A.5 message (:func:`governance.audit.atna.message.classify`) plus RadGate's action code, ``action``
C/R/U/D/E, ``recorded`` the entry's time, ``outcome`` 0 or 4, ``agent`` the user (requestor, with
role) and RadGate (the application), ``source`` the audit source, ``entity`` the target with the
entry's chain seq and hash as details. The resource id is derived from the chain position and
hash, so a resent entry (PUT) updates the same AuditEvent. Details leave only when the profile
allows. Built and validated with fhir.resources' R4B models (AuditEvent is unchanged from R4).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from fhir.resources.R4B.auditevent import AuditEvent

from governance.audit.atna.message import PRIVATE_SCHEME, AtnaProfile, classify, outcome_of

if TYPE_CHECKING:
    from governance.audit.log import AuditEntry

__all__ = ["FhirAuditSender", "audit_event", "audit_event_id"]

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ACTION_SYSTEM = "urn:radgate:audit-action"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"


def audit_event_id(entry: AuditEntry) -> str:
    return f"radgate-audit-{entry.seq}-{entry.hash[:16]}"


def _coding(code: Any) -> dict[str, str]:
    system = _DCM if code.scheme == "DCM" else f"urn:radgate:{code.scheme.lower()}"
    return {"system": system, "code": code.code, "display": code.meaning}


def audit_event(entry: AuditEntry, profile: AtnaProfile | None = None) -> AuditEvent:
    """The AuditEvent of ``entry`` (validated by the fhir.resources model)."""
    profile = profile or AtnaProfile()
    kind = classify(entry.action)
    outcome, description = outcome_of(entry)
    subtypes = [_coding(kind.event_type)] if kind.event_type else []
    subtypes.append({"system": _ACTION_SYSTEM, "code": entry.action[:64]})
    details = [
        {"type": "radgate-audit-seq", "valueString": str(entry.seq)},
        {"type": "radgate-audit-hash", "valueString": entry.hash},
    ]
    if profile.include_details and entry.details:
        encoded = json.dumps(entry.details, sort_keys=True)[:4096].encode()
        details.append(
            {"type": "radgate-audit-details", "valueBase64Binary": base64.b64encode(encoded).decode()}
        )
    user = {
        "who": {
            "identifier": {"system": "urn:radgate:user", "value": entry.actor[:64]},
            "display": entry.actor[:64],
        },
        "requestor": True,
    }
    if entry.role:
        user["role"] = [
            {"coding": [{"system": f"urn:radgate:{PRIVATE_SCHEME.lower()}:role", "code": entry.role[:32]}]}
        ]
    resource = {
        "resourceType": "AuditEvent",
        "id": audit_event_id(entry),
        "type": _coding(kind.event_id),
        "subtype": subtypes,
        "action": kind.action_code,
        "recorded": entry.ts,
        "outcome": outcome,
        **({"outcomeDesc": description} if description else {}),
        "agent": [
            user,
            {
                "who": {"display": profile.source_id},
                "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
                "requestor": False,
            },
        ],
        "source": {
            "site": profile.enterprise_site or profile.source_id,
            "observer": {"display": profile.source_id},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": [
            {
                "what": {"identifier": {"system": "urn:radgate:audit-target", "value": entry.target[:255]}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "detail": details,
            }
        ],
    }
    return AuditEvent.model_validate(resource)


class FhirAuditSender:
    """PUTs AuditEvents to a FHIR server (bearer token; TLS verified with ``ca_file`` if given)."""

    def __init__(
        self, url: str, *, token: str | None = None, ca_file: str | None = None, timeout_s: float = 10.0
    ) -> None:
        import httpx

        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s, verify=ca_file or True, headers=headers)

    def __call__(self, entry: AuditEntry, profile: AtnaProfile | None = None) -> None:
        event = audit_event(entry, profile)
        answer = self.client.put(
            f"{self.url}/AuditEvent/{event.id}", content=event.model_dump_json(exclude_none=True)
        )
        if answer.status_code >= 300:
            raise RuntimeError(f"FHIR server answered HTTP {answer.status_code} for the AuditEvent")
