"""ATNA export of the audit chain: DICOM PS3.15 A.5 XML over RFC 5424 syslog, FHIR AuditEvent.

The chain (:mod:`governance.audit.log`) stays the source of truth; exporters follow it with a
durable cursor (:mod:`governance.audit.atna.export`) and retry with backoff, so nothing is dropped.
"""

from governance.audit.atna.export import Backoff, ChainExporter, ExportCursor, PumpReport, entries_after
from governance.audit.atna.message import (
    ATNA_SCHEMA,
    AtnaMessageError,
    AtnaProfile,
    audit_message,
    classify,
    validate_message,
)
from governance.audit.atna.syslog import SyslogDestination, SyslogError, SyslogSender, format_rfc5424

__all__ = [
    "ATNA_SCHEMA",
    "AtnaMessageError",
    "AtnaProfile",
    "Backoff",
    "ChainExporter",
    "ExportCursor",
    "PumpReport",
    "SyslogDestination",
    "SyslogError",
    "SyslogSender",
    "audit_message",
    "classify",
    "entries_after",
    "fhir_audit_exporter",
    "format_rfc5424",
    "syslog_exporter",
    "validate_message",
]


def fhir_audit_exporter(
    url: str, *, token: str | None = None, ca_file: str | None = None, profile: AtnaProfile | None = None
) -> ChainExporter:
    """An exporter PUTting every chain entry as a FHIR AuditEvent (IHE BALP) to ``url``."""
    from governance.audit.atna.fhir_audit import FhirAuditSender

    sender = FhirAuditSender(url, token=token, ca_file=ca_file)
    chosen = profile or AtnaProfile()
    return ChainExporter("fhir-auditevent", lambda entry: sender(entry, chosen))


def syslog_exporter(destination: SyslogDestination, profile: AtnaProfile | None = None) -> ChainExporter:
    """An exporter sending every chain entry as a validated A.5 message to ``destination``."""
    sender = SyslogSender(destination)
    chosen = profile or AtnaProfile()
    return ChainExporter(
        f"atna-{destination.transport}-{destination.host}-{destination.port}",
        lambda entry: sender.send(audit_message(entry, chosen)),
    )
