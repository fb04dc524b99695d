"""``radgate pull``: find studies on a PACS by QIDO-RS and fetch them by WADO-RS, instance by
instance, into the same ingest path as every other intake.

Instances come back exactly as the PACS stores them (``transfer-syntax=*``: no transcoding),
and the ledger makes a pull resumable: what was already ingested is not fetched again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from imaging.gateway.config import ConfigError, PacsPeer
from imaging.gateway.ledger import PullLedger
from imaging.gateway.multipart import MultipartError, content_type_params, iter_parts
from imaging.gateway.pull_source import InstanceRef, PullError
from imaging.gateway.sink import Sink

__all__ = ["DicomwebSource", "InstanceRef", "PullError", "PullMethod", "PullReport", "pull"]

LOGGER = logging.getLogger(__name__)
_STUDY_UID, _SERIES_UID, _SOP_UID = "0020000D", "0020000E", "00080018"
_ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class PullMethod(enum.StrEnum):
    AUTO = "auto"
    DICOMWEB = "dicomweb"
    DIMSE = "dimse"
    CMOVE = "cmove"  # C-FIND + C-MOVE to the running gateway (PACS without C-GET)


@dataclass
class PullReport:
    studies: int = 0
    instances: int = 0
    skipped: int = 0  # already pulled earlier
    ingested: int = 0
    quarantined: int = 0
    errors: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "instances": self.instances,
            "skipped": self.skipped,
            "ingested": self.ingested,
            "quarantined": self.quarantined,
            "errors": self.errors,
        }


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _query_string(filters: dict[str, str]) -> str:
    # Wildcards go unencoded: Orthanc does not percent-decode query values.
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='*?,-._~')}" for k, v in filters.items())


class DicomwebSource:
    """QIDO-RS / WADO-RS client of one PACS (basic or bearer auth from the environment)."""

    def __init__(self, peer: PacsPeer, timeout: float = 120.0) -> None:
        if not peer.dicomweb_url:
            raise ConfigError(f"PACS {peer.name!r} has no dicomweb_url")
        headers = {}
        token = peer.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=peer.dicomweb_url.rstrip("/"), auth=peer.credentials(), headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def _get_json(self, path: str, filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
        url = path + ("?" + _query_string(filters) if filters else "")
        try:
            response = self._client.get(url, headers={"Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise PullError(f"QIDO-RS request failed: {type(exc).__name__}") from exc
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise PullError(f"QIDO-RS answered HTTP {response.status_code}")
        result: list[dict[str, Any]] = response.json() or []
        return result

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        return [_value(item, _STUDY_UID) for item in self._get_json("/studies", filters)]

    def search_instances(self, study: str) -> list[InstanceRef]:
        items = self._get_json(f"/studies/{study}/instances")
        return [InstanceRef(study, _value(i, _SERIES_UID), _value(i, _SOP_UID)) for i in items]

    def retrieve(self, ref: InstanceRef) -> bytes:
        path = f"/studies/{ref.study}/series/{ref.series}/instances/{ref.sop}"
        try:
            response = self._client.get(path, headers={"Accept": _ACCEPT_DICOM})
        except httpx.HTTPError as exc:
            raise PullError(f"WADO-RS request failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise PullError(f"WADO-RS answered HTTP {response.status_code}")
        _, params = content_type_params(response.headers.get("content-type", ""))
        try:
            parts = list(iter_parts(response.content, params.get("boundary", "")))
        except MultipartError as exc:
            raise PullError(f"WADO-RS response is malformed: {exc}") from exc
        if len(parts) != 1:
            raise PullError(f"WADO-RS returned {len(parts)} parts for one instance")
        return parts[0].body


def pull(
    peer: PacsPeer,
    sink: Sink,
    *,
    studies: Iterable[str] = (),
    filters: dict[str, str] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_instance: Callable[[str], None] | None = None,
    method: PullMethod = PullMethod.AUTO,
    calling_ae: str = "RADGATE",
) -> PullReport:
    """Pull the given studies, or those matching ``filters``, from ``peer`` into ``sink``:
    DICOMweb (QIDO-RS + WADO-RS) when the peer has a ``dicomweb_url``, else DIMSE (C-FIND +
    C-GET); ``method`` forces one. ``cmove`` asks the PACS to C-MOVE to ``calling_ae``, which
    must be the running ``radgate gateway`` (the PACS needs its address)."""
    from imaging.ingest import IngestStatus

    source: Any
    if method in (PullMethod.DIMSE, PullMethod.CMOVE) or (
        method is PullMethod.AUTO and not peer.dicomweb_url
    ):
        from imaging.gateway.dimse_pull import DimseSource

        source = DimseSource(peer, calling_ae=calling_ae)
    else:
        source = DicomwebSource(peer)
    ledger = PullLedger(peer.name)
    report = PullReport()
    try:
        study_uids = list(dict.fromkeys(studies))
        if filters:
            study_uids += [uid for uid in source.search_studies(filters) if uid not in study_uids]
        report.studies = len(study_uids)
        refs = [ref for study in study_uids for ref in source.search_instances(study)]
        report.instances = len(refs)
        done = ledger.done([ref.sop for ref in refs])
        if on_total:
            on_total(len(refs))
        for ref in refs:
            if ref.sop in done:
                report.skipped += 1
                if on_instance:
                    on_instance("skipped")
                continue
            try:
                if method is PullMethod.CMOVE:
                    # The PACS stores into the running gateway, which acknowledges each
                    # sub-operation only after its ingest committed; success means all done.
                    source.move(ref)
                    ledger.record(ref.sop, "moved", None)
                    report.ingested += 1
                    if on_instance:
                        on_instance("moved")
                    continue
                data = source.retrieve(ref)
                outcome = sink.ingest_bytes(data, f"pull:{peer.name}")
            except Exception as exc:  # one bad instance must not stop the cohort
                LOGGER.error("pull from %s: an instance failed: %s", peer.name, type(exc).__name__)
                report.errors += 1
                if on_instance:
                    on_instance("error")
                continue
            status = IngestStatus(outcome.status)
            ledger.record(ref.sop, status.value, outcome.input_sha256)
            report.outcomes[status.value] = report.outcomes.get(status.value, 0) + 1
            if status is IngestStatus.QUARANTINED:
                report.quarantined += 1
            else:
                report.ingested += 1
            if on_instance:
                on_instance(status.value)
    finally:
        source.close()
    return report
