"""DICOM PS3.15 A.5 audit messages from chain entries: schema-valid, nothing beyond the profile."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from governance.audit import AuditLog
from governance.audit.atna import (
    AtnaMessageError,
    AtnaProfile,
    audit_message,
    format_rfc5424,
    validate_message,
)


def test_message_is_schema_valid_and_keeps_details_local_by_default() -> None:
    entry = AuditLog().append("alice", "serve.predict", "model:m/1", {"inputs_sha256": ["ab" * 32]}, role="x")
    xml = audit_message(entry)
    validate_message(xml)
    root = etree.fromstring(xml)
    kinds = {d.get("type") for d in root.iter("ParticipantObjectDetail")}
    assert kinds == {"radgate-audit-seq", "radgate-audit-hash"}
    detailed = etree.fromstring(audit_message(entry, AtnaProfile(include_details=True)))
    (details,) = detailed.xpath("//ParticipantObjectDetail[@type='radgate-audit-details']")
    assert b"inputs_sha256" in base64.b64decode(details.get("value"))


@pytest.mark.parametrize(
    "broken",
    [
        b"<AuditMessage/>",  # no event, no participant, no source
        b"<AuditMessage><EventIdentification EventDateTime='2026-01-01T00:00:00Z' EventOutcomeIndicator='3'>"
        b"<EventID csd-code='110100' codeSystemName='DCM' originalText='x'/>"
        b"</EventIdentification></AuditMessage>",
        b"<AuditMessage><unclosed></AuditMessage>",
        b"<!DOCTYPE a [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><AuditMessage>&x;</AuditMessage>",
    ],
)
def test_schema_refuses_what_the_standard_does_not_allow(broken: bytes) -> None:
    with pytest.raises(AtnaMessageError):
        validate_message(broken)


def test_control_characters_in_actor_and_target_stay_valid() -> None:
    entry = AuditLog().append("eve\x07 \n x", "ui.login", "user:eve\u2028<b>", {}, role="r")
    root = etree.fromstring(audit_message(entry))
    assert root.find("ActiveParticipant").get("UserID") == "eve x"


def test_rfc5424_frame() -> None:
    frame = format_rfc5424(b"<?xml version='1.0'?>\n<AuditMessage/>", hostname="host one")
    header, _, body = frame.partition(b" \xef\xbb\xbf")
    fields = header.split(b" ")
    assert fields[0] == b"<85>1" and fields[2] == b"hostone" and fields[5] == b"DICOM+RFC3881"
    assert body == b"<AuditMessage/>"
