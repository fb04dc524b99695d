"""Hospital interoperability of the serving layer: FHIR R4 results for the EMR, ATNA audit export,
and the UPS-RS worklist for AI tasks (IHE AI Workflow for Imaging).

:func:`start_interop` starts the background senders the serving config asks for (FHIR bundles,
ATNA syslog) and publishes their backlogs as ``radgate_interop_backlog{queue=...}`` (and refused
bundles as ``radgate_interop_refused{queue=...}``) on ``/metrics``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field

from serving.interop.emr import FhirConfig, FhirSender, activate, outbox_for, record_results, record_review
from serving.interop.fhir import IdentifierProfile

__all__ = [
    "AtnaExportConfig",
    "FhirConfig",
    "IdentifierProfile",
    "Interop",
    "record_results",
    "record_review",
    "start_interop",
]

BACKLOG = Gauge(
    "radgate_interop_backlog", "Messages queued for an external system, not yet delivered", ["queue"]
)
REFUSED = Gauge(
    "radgate_interop_refused", "Messages the external system refused as invalid (kept)", ["queue"]
)


class AtnaExportConfig(BaseModel):
    """``atna:`` of the serving config: where the audit chain is exported (RFC 5424 syslog)."""

    model_config = ConfigDict(extra="forbid")

    syslog: str = Field(description="udp://, tcp:// or tls://HOST:PORT of the audit repository")
    ca_file: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    source_id: str = Field(default="radgate", max_length=64)
    enterprise_site: str | None = Field(default=None, max_length=64)
    include_details: bool = False  # audit details stay local unless the repository may have them
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)


@dataclass
class Interop:
    """The running senders; :meth:`stop` ends them."""

    threads: list[tuple[threading.Thread, threading.Event]] = field(default_factory=list)

    def stop(self) -> None:
        for _, stop in self.threads:
            stop.set()
        for thread, _ in self.threads:
            thread.join(timeout=10)
        self.threads.clear()


def start_interop(
    fhir: FhirConfig | None, atna: AtnaExportConfig | None, *, interval_s: float = 2.0
) -> Interop:
    """Start what is configured; gauges read the queues at scrape time."""
    running = Interop()
    if fhir is not None:
        activate(fhir)
        outbox = outbox_for(fhir)
        BACKLOG.labels(queue="fhir").set_function(outbox.backlog)
        REFUSED.labels(queue="fhir").set_function(outbox.refused)
        if fhir.url is not None:
            running.threads.append(FhirSender(fhir).start(interval_s=interval_s))
    if atna is not None:
        from governance.audit.atna import AtnaProfile, Backoff, SyslogDestination, syslog_exporter

        destination = SyslogDestination.parse(
            atna.syslog,
            ca_file=atna.ca_file,
            client_cert=atna.client_certificate,
            client_key=atna.client_key,
        )
        exporter = syslog_exporter(
            destination, AtnaProfile(atna.source_id, atna.enterprise_site, atna.include_details)
        )
        BACKLOG.labels(queue="atna").set_function(exporter.backlog)
        running.threads.append(
            exporter.start(interval_s=interval_s, backoff=Backoff(atna.retry_initial_s, atna.retry_max_s))
        )
    return running
