"""One audit chain entry as a DICOM PS3.15 Annex A.5 audit message (XML), validated.

The event is classified by the entry's action (login, study access, export, de-identification,
model approval, restricted function...) into the standard's Event ID and Event Type codes (DCM,
PS3.16 CID 400-403); the action itself travels as an extra Event Type in RadGate's private scheme,
so a reader can map it back. The message carries the entry's chain position and hash, so the
audit repository's copy can always be checked against the local chain, which stays the source of
truth.

What leaves: actor, role, action, target, outcome and the chain hash. The entry's details leave
only when the export profile allows it (``include_details``); audit details are PHI-checked when
written (:mod:`governance.audit.phi`), the default still keeps them local.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

if TYPE_CHECKING:
    from governance.audit.log import AuditEntry

__all__ = [
    "ATNA_SCHEMA",
    "AtnaMessageError",
    "AtnaProfile",
    "EventCode",
    "audit_message",
    "classify",
    "outcome_of",
    "validate_message",
]

#: RELAX NG (XML syntax) of PS3.15 A.5.1.1, beside this module.
ATNA_SCHEMA = Path(__file__).with_name("dicom-audit-message.rng")
PRIVATE_SCHEME = "99RADGATE"


class AtnaMessageError(ValueError):
    """The message does not conform to the DICOM audit message schema."""


@dataclass(frozen=True)
class EventCode:
    """A coded value (csd-code, codeSystemName, originalText)."""

    code: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class AtnaProfile:
    """What the export tells the audit repository about this installation."""

    source_id: str = "radgate"
    enterprise_site: str | None = None
    include_details: bool = False


@dataclass(frozen=True)
class _Classified:
    event_id: EventCode
    event_type: EventCode | None
    action_code: str  # C R U D E
    object_role: str  # ParticipantObjectTypeCodeRole
    life_cycle: str | None  # ParticipantObjectDataLifeCycle


_LOGIN = EventCode("110114", "DCM", "User Authentication")
_ACCESSED = EventCode("110103", "DCM", "DICOM Instances Accessed")
_EXPORT = EventCode("110106", "DCM", "Export")
_IMPORT = EventCode("110107", "DCM", "Import")
_SECURITY = EventCode("110113", "DCM", "Security Alert")
_APPLICATION = EventCode("110100", "DCM", "Application Activity")
_AUDIT_USED = EventCode("110101", "DCM", "Audit Log Used")
_PATIENT_RECORD = EventCode("110110", "DCM", "Patient Record")


def classify(action: str) -> _Classified:
    """The standard's event codes for a RadGate audit action (dotted, e.g. ``serve.predict``)."""
    parts = set(action.lower().split("."))
    if parts & {"login", "logout", "auth", "session"}:
        kind = (
            EventCode("110123", "DCM", "Logout") if "logout" in parts else EventCode("110122", "DCM", "Login")
        )
        return _Classified(_LOGIN, kind, "E", "11", None)
    if parts & {"reid", "erasure"}:
        restricted = EventCode("110132", "DCM", "Use of Restricted Function")
        return _Classified(_SECURITY, restricted, "E", "1", "14" if "erasure" in parts else "6")
    if parts & {"export", "push", "send", "fhir"}:
        return _Classified(_EXPORT, None, "R", "3", "10")
    if parts & {"deid", "ingest", "import", "quarantine"}:
        return _Classified(_IMPORT, None, "C", "4", "7" if "deid" in parts or "ingest" in parts else "2")
    if parts & {"model", "approval", "policy", "webhook", "keys", "seal", "user"}:
        software = EventCode("110131", "DCM", "Software Configuration")
        if parts & {"user", "keys", "seal"}:
            software = EventCode("110137", "DCM", "User Security Attributes Changed")
        return _Classified(_SECURITY, software, "U", "13", None)
    if parts & {"audit"}:
        return _Classified(_AUDIT_USED, None, "R", "13", None)
    if parts & {"patient"}:
        return _Classified(_PATIENT_RECORD, None, "R", "1", "6")
    if parts & {"serve", "predict", "read", "view", "study", "case", "retrieve", "ups", "feedback"}:
        return _Classified(_ACCESSED, None, "R", "4", "6")
    return _Classified(_APPLICATION, None, "E", "4", None)


def outcome_of(entry: AuditEntry) -> tuple[str, str | None]:
    """EventOutcomeIndicator: 4 (minor failure) for refusals, else 0."""
    action = entry.action.lower()
    if any(word in action for word in ("denied", "rejected", "refused", "failed", "invalid")):
        status = entry.details.get("status") if isinstance(entry.details, dict) else None
        return "4", f"{entry.action} (status {status})" if status is not None else entry.action
    return "0", None


def _coded(parent: etree._Element, tag: str, code: EventCode) -> etree._Element:
    return etree.SubElement(
        parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning}
    )


def _detail(parent: etree._Element, kind: str, value: str) -> None:
    encoded = base64.b64encode(value.encode("utf-8")).decode("ascii")
    etree.SubElement(parent, "ParticipantObjectDetail", {"type": kind, "value": encoded})


def _token(value: str, limit: int = 255) -> str:
    """xsd:token content: no leading/trailing/duplicate whitespace, control characters dropped."""
    return " ".join("".join(c for c in value if c.isprintable()).split())[:limit] or "-"


def audit_message(entry: AuditEntry, profile: AtnaProfile | None = None) -> bytes:
    """The Annex A.5 XML of ``entry`` (UTF-8, with declaration); validated before it is returned."""
    profile = profile or AtnaProfile()
    kind = classify(entry.action)
    outcome, description = outcome_of(entry)
    root = etree.Element("AuditMessage")
    event = etree.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": kind.action_code,
            "EventDateTime": datetime.fromisoformat(entry.ts).isoformat(),
            "EventOutcomeIndicator": outcome,
        },
    )
    _coded(event, "EventID", kind.event_id)
    if kind.event_type is not None:
        _coded(event, "EventTypeCode", kind.event_type)
    _coded(
        event, "EventTypeCode", EventCode(_token(entry.action, 64), PRIVATE_SCHEME, _token(entry.action, 64))
    )
    if description is not None:
        etree.SubElement(event, "EventOutcomeDescription").text = description
    person = etree.SubElement(
        root, "ActiveParticipant", {"UserID": _token(entry.actor, 64), "UserIsRequestor": "true"}
    )
    if entry.role:
        _coded(
            person, "RoleIDCode", EventCode(_token(entry.role, 32), PRIVATE_SCHEME, _token(entry.role, 32))
        )
    application = etree.SubElement(
        root, "ActiveParticipant", {"UserID": _token(profile.source_id, 64), "UserIsRequestor": "false"}
    )
    _coded(application, "RoleIDCode", EventCode("110150", "DCM", "Application"))
    source_attrs = {"AuditSourceID": _token(profile.source_id, 64)}
    if profile.enterprise_site:
        source_attrs["AuditEnterpriseSiteID"] = _token(profile.enterprise_site, 64)
    source = etree.SubElement(root, "AuditSourceIdentification", source_attrs)
    etree.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    target = etree.SubElement(
        root,
        "ParticipantObjectIdentification",
        {
            "ParticipantObjectID": _token(entry.target),
            "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": kind.object_role,
            **({"ParticipantObjectDataLifeCycle": kind.life_cycle} if kind.life_cycle else {}),
        },
    )
    _coded(target, "ParticipantObjectIDTypeCode", EventCode("target", PRIVATE_SCHEME, "RadGate audit target"))
    etree.SubElement(target, "ParticipantObjectName").text = _token(entry.target.split(":", 1)[0], 64)
    _detail(target, "radgate-audit-seq", str(entry.seq))
    _detail(target, "radgate-audit-hash", entry.hash)
    if profile.include_details and entry.details:
        _detail(target, "radgate-audit-details", json.dumps(entry.details, sort_keys=True)[:4096])
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    validate_message(data)
    return data


@lru_cache(maxsize=1)
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(ATNA_SCHEMA)))


def validate_message(data: bytes) -> None:
    """Raise :class:`AtnaMessageError` unless ``data`` is a valid PS3.15 A.5.1.1 audit message."""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        document = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise AtnaMessageError(f"not well-formed XML: {exc}") from exc
    schema = _schema()
    if not schema.validate(document):
        first = schema.error_log.last_error
        raise AtnaMessageError(f"audit message fails the DICOM schema: {first.message if first else '?'}")
