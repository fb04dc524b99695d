"""FHIR results for the EMR: record each served result, update it on review, deliver with retries.

:func:`record_results` (the predict route, after a successful request) turns each result into
:class:`~serving.interop.fhir.ResultFacts` (identifiers mapped by the profile), writes its facts and
its transaction Bundle (status ``preliminary``) into the outbox (``RADGATE_HOME/fhir`` by default).
:func:`record_review` (a clinician's feedback) writes the same bundle again with status ``final``
and the reviewer's decision. :class:`FhirSender` POSTs pending bundles in order to the configured
server (``--fhir-url``; bearer token from the environment; TLS required except on loopback); a
server that is down keeps them pending and the sender retries with exponential backoff; a server
that refuses a bundle as invalid (4xx) moves it to ``refused/`` with the answer (counted, kept).
The backlog is a gauge on ``/metrics`` (``radgate_interop_backlog{queue="fhir"}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from governance.settings import get_settings
from serving.interop.fhir import (
    FindingFacts,
    IdentifierProfile,
    ResultFacts,
    ReviewOutcome,
    build_bundle,
    now_instant,
    pseudonymous_uid,
)
from serving.interop.outbox import Outbox

__all__ = [
    "FhirConfig",
    "FhirDeliveryError",
    "FhirSender",
    "erasure_lookup",
    "facts_path",
    "outbox_for",
    "record_results",
    "record_review",
]

LOGGER = logging.getLogger(__name__)
TOKEN_ENV = "RADGATE_FHIR_TOKEN"


class FhirDeliveryError(RuntimeError):
    """The FHIR server could not be reached or did not take the bundle."""


class FhirConfig(BaseModel):
    """``fhir:`` of the serving config."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="FHIR R4 base URL; none: bundles are only written")
    outbox: Path | None = Field(default=None, description="default RADGATE_HOME/fhir")
    identifiers: IdentifierProfile = IdentifierProfile.DEIDENTIFIED
    ca_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _secure(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("fhir url must be http(s)://HOST[:PORT]/PATH")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError("fhir url must use https (plain http only to a loopback address)")
        return value.rstrip("/")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


_active: FhirConfig | None = None


def activate(config: FhirConfig) -> None:
    """The FHIR config of this process's serving app (what :func:`record_review` uses)."""
    global _active
    _active = config


def outbox_for(config: FhirConfig) -> Outbox:
    return Outbox(config.outbox or get_settings().home / "fhir")


def facts_path(outbox: Outbox, result_id: str) -> Path:
    """The local facts of a result (``results/<sha256 of the id>.json``, 0600; never sent)."""
    return outbox.root / "results" / f"{hashlib.sha256(result_id.encode()).hexdigest()}.json"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def erasure_lookup(key: Any, patient_id: str) -> str:
    """Keyed digest of an original PatientID under the project key (``ResultFacts.erasure_lookup``)."""
    return str(key.mac("erasure-lookup", patient_id.strip().encode()).hex()[:32])


def _identifiers(header: Any, profile: IdentifierProfile) -> tuple[str, str, str]:
    """(patient, study UID) as the EMR may see them, and the erasure lookup of the patient
    ("" when the EMR sees the original identifier, which erasure matches as it is)."""
    patient = str(header.get("PatientID", "") or "unknown")
    issuer = str(header.get("IssuerOfPatientID", "") or "")
    study = str(header.get("StudyInstanceUID", "") or "")
    if not study:
        raise ValueError("the instance has no StudyInstanceUID")
    if profile is IdentifierProfile.ORIGINAL:
        return (f"{issuer}|{patient}" if issuer else patient), study, ""
    from governance.keys import load_project_key

    key = load_project_key(create=False)  # the de-identifier's key: never made up here
    pseudonym = key.mac("fhir-patient", f"{issuer}\0{patient}".encode()).hex()[:32]
    return pseudonym, pseudonymous_uid(key.derive("fhir-uid"), study), erasure_lookup(key, patient)


def _sop_uids(objects: Sequence[bytes]) -> tuple[str, ...]:
    from pydicom import dcmread

    uids = []
    for data in objects:
        uid = dcmread(BytesIO(data), stop_before_pixels=True, force=True).get("SOPInstanceUID")
        if uid:
            uids.append(str(uid))
    return tuple(uids)


def record_results(
    config: FhirConfig,
    response: dict[str, Any],
    instances: Sequence[bytes],
    objects: Sequence[Sequence[bytes]] = (),
) -> list[Path]:
    """Queue a preliminary bundle for each classification result of one predict response."""
    from pydicom import dcmread

    outbox = outbox_for(config)
    approval = response.get("approval", {}) or {}
    model = response.get("model", {}) or {}
    written = []
    for index, result in enumerate(response.get("results", [])):
        if "decision" not in result or "request_id" not in result:
            continue  # segmentation results: their SEG/SR go to the PACS, not this report
        header = dcmread(BytesIO(instances[index]), stop_before_pixels=True, force=True)
        patient, study, lookup = _identifiers(header, config.identifiers)
        decision = result["decision"]
        facts = ResultFacts(
            result_id=str(result["request_id"]),
            patient=patient,
            study_uid=study,
            model_name=str(model.get("name", "?")),
            model_version=str(model.get("version", "?")),
            artifact_sha256=str(approval.get("artifact_sha256", "") or "unknown"),
            approval=str(approval.get("status", "approved") or "approved"),
            alias=approval.get("alias"),
            issued=now_instant(),
            findings=(
                FindingFacts(
                    label=str(result["finding"]),
                    probability=float(result["probability"]),
                    positive=bool(decision["positive"]),
                    threshold=float(decision["threshold"]),
                ),
            ),
            result_sop_uids=_sop_uids(objects[index]) if index < len(objects) else (),
            erasure_lookup=lookup,
        )
        written.append(_queue(outbox, facts))
    return written


def _queue(outbox: Outbox, facts: ResultFacts) -> Path:
    bundle = build_bundle(facts)
    _write_private(facts_path(outbox, facts.result_id), json.dumps(facts.to_dict()).encode())
    return outbox.put(
        f"{facts.result_id}-{facts.review.value}", bundle.model_dump_json(exclude_none=True).encode()
    )


def record_review(
    result_id: str, agree: bool, label: str, *, config: FhirConfig | None = None
) -> Path | None:
    """Queue the ``final`` bundle of a reviewed result; None when no FHIR report was recorded."""
    outbox = outbox_for(config or _active or FhirConfig())
    path = facts_path(outbox, result_id)
    if not path.exists():
        return None
    facts = ResultFacts.from_dict(json.loads(path.read_text()))
    reviewed = replace(
        facts,
        review=ReviewOutcome.CONFIRMED if agree else ReviewOutcome.OVERRIDDEN,
        reviewed_label=None if agree else label,
        issued=now_instant(),
    )
    return _queue(outbox, reviewed)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    refused: int
    backlog: int
    error: str | None = None


class FhirSender:
    """POSTs pending bundles, oldest first, to the configured FHIR server."""

    def __init__(self, config: FhirConfig, *, token: str | None = None) -> None:
        if config.url is None:
            raise FhirDeliveryError("no FHIR url configured")
        self.config = config
        self.url = config.url
        self.outbox = outbox_for(config)
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.failures = 0

    def _client(self) -> Any:
        import httpx

        verify: Any = str(self.config.ca_file) if self.config.ca_file else True
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return httpx.Client(timeout=self.config.timeout_s, verify=verify, headers=headers)

    def deliver(self, limit: int | None = None) -> DeliveryReport:
        import httpx

        sent = refused = 0
        with self._client() as client:
            for path in self.outbox.pending(limit):
                try:
                    answer = client.post(self.url, content=path.read_bytes())
                except FileNotFoundError:
                    continue  # another replica's sender delivered it meanwhile
                except httpx.HTTPError as exc:
                    return self._stopped(sent, refused, f"{type(exc).__name__}")
                # Not the bundle's fault (credentials, throttling, server): keep it and retry later.
                if answer.status_code in (401, 403, 408, 429) or answer.status_code >= 500:
                    return self._stopped(sent, refused, f"HTTP {answer.status_code}")
                if answer.status_code >= 400 or not _all_entries_ok(answer):
                    with contextlib.suppress(FileNotFoundError):
                        self.outbox.mark_refused(path, answer.content)
                    refused += 1
                    LOGGER.warning("FHIR server refused %s: HTTP %d", path.name, answer.status_code)
                    continue
                with contextlib.suppress(FileNotFoundError):  # a resend is harmless: conditional updates
                    self.outbox.mark_sent(path)
                sent += 1
        self.failures = 0
        return DeliveryReport(sent, refused, self.outbox.backlog())

    def _stopped(self, sent: int, refused: int, error: str) -> DeliveryReport:
        self.failures += 1
        LOGGER.warning("FHIR delivery paused (%s); %d pending", error, self.outbox.backlog())
        return DeliveryReport(sent, refused, self.outbox.backlog(), error)

    def run(self, stop: threading.Event, *, interval_s: float = 2.0) -> None:
        from governance.audit.atna import Backoff

        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        while not stop.is_set():
            try:
                report = self.deliver()
            except OSError as exc:  # the outbox itself (disk): keep the thread, retry later
                self.failures += 1
                LOGGER.warning("FHIR outbox unreadable: %s", type(exc).__name__)
                report = DeliveryReport(0, 0, -1, type(exc).__name__)
            stop.wait(backoff.delay(self.failures) if report.error else interval_s)

    def start(self, *, interval_s: float = 2.0) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop,), kwargs={"interval_s": interval_s}, name="fhir-sender", daemon=True
        )
        thread.start()
        return thread, stop


def _all_entries_ok(answer: Any) -> bool:
    """A transaction-response whose every entry has a 2xx status."""
    try:
        body = answer.json()
    except ValueError:
        return False
    if body.get("resourceType") != "Bundle":
        return False
    statuses = [str(e.get("response", {}).get("status", "")) for e in body.get("entry", [])]
    return bool(statuses) and all(s[:1] == "2" for s in statuses)
