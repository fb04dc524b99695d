"""DICOMweb STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with a
``multipart/related; type="application/dicom"`` body, answered with the Store Instances
Response Module in DICOM JSON (200 all stored, 202 some failed, 409 none stored).

Every route authenticates (bearer token, role ``pacs-client``); the interactive docs and the
OpenAPI document are off. Responses and logs carry reason codes, never patient data.
"""

from __future__ import annotations

import logging
import mmap
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydicom import dcmread

from governance.tls import TransportSecurity
from imaging.dicomio import inflated_data_set
from imaging.gateway.multipart import MultipartError, content_type_params, part_spans
from imaging.gateway.scp import audit
from imaging.gateway.sink import Sink
from imaging.gateway.status import StoreStatus, Verdict, verdict_for_error, verdict_for_outcome

__all__ = ["DICOM_JSON", "create_stow_app", "default_auth_dependency"]

LOGGER = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"
_SPOOL_BYTES = 16 * 1024 * 1024  # request bodies larger than this are spooled to disk

# Store Instances Response Module attributes (PS3.18 Table 10.5.3-2)
_FAILURE_REASON = "00081197"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_CLASS = "00081150"
_REFERENCED_SOP_INSTANCE = "00081155"
_WARNING_REASON = "00081196"


def default_auth_dependency() -> Callable[..., Any]:
    """Bearer-token authentication of the platform, role ``pacs-client``."""
    from governance.auth import Role, fastapi_dependency

    dependency: Callable[..., Any] = fastapi_dependency(Role.PACS_CLIENT)
    return dependency


@dataclass(frozen=True)
class _Identity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str


def _identify(data: bytes) -> _Identity | None:
    """The sender's own UIDs, to reference its instances in the response (not logged)."""
    try:
        inflated = inflated_data_set(data)  # pydicom would inflate a deflated file unbounded
        ds = dcmread(
            BytesIO(data if inflated is None else inflated),
            stop_before_pixels=True,
            force=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"],
        )
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
        sop_instance = ds.get("SOPInstanceUID") or (meta.get("MediaStorageSOPInstanceUID") if meta else None)
        return _Identity(str(sop_class or ""), str(sop_instance or ""), str(ds.get("StudyInstanceUID", "")))
    except Exception:  # best effort: the part itself still goes to ingest, which quarantines it
        return None


class _SpooledBody:
    """A request body: in memory up to ``_SPOOL_BYTES``, beyond in an unnamed temporary file
    (unlinked at once: nothing is left behind, even after a crash) read through a memory map,
    so that a large request costs disk, not memory, and each part is copied only while it is
    being ingested."""

    def __init__(self) -> None:
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: Any = None
        self._map: mmap.mmap | None = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size > _SPOOL_BYTES:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
            for held in self._chunks:
                self._file.write(held)
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)

    def body(self) -> bytes | mmap.mmap:
        if self._file is None:
            return b"".join(self._chunks)
        self._file.flush()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def __enter__(self) -> _SpooledBody:
        return self

    def __exit__(self, *_: object) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()
        self._chunks = []


def _item(identity: _Identity | None, verdict: Verdict | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        _REFERENCED_SOP_CLASS: {"vr": "UI", "Value": [identity.sop_class_uid]}
        if identity and identity.sop_class_uid
        else {"vr": "UI"},
        _REFERENCED_SOP_INSTANCE: {"vr": "UI", "Value": [identity.sop_instance_uid]}
        if identity and identity.sop_instance_uid
        else {"vr": "UI"},
    }
    if verdict is not None and not verdict.ok:
        item[_FAILURE_REASON] = {"vr": "US", "Value": [int(verdict.status)]}
    return item


def create_stow_app(
    sink: Sink, auth: Callable[..., Any] | None = None, max_request_bytes: int = 2 * 1024**3
) -> FastAPI:
    """The STOW-RS application; ``auth`` is a FastAPI dependency (default: platform tokens)."""
    app = FastAPI(title="RadGate DICOMweb gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TransportSecurity)  # over HTTPS: HSTS, Secure cookies
    authenticated = Depends(auth or default_auth_dependency())

    async def store(request: Request, principal: Any, study: str | None = None) -> JSONResponse:
        media_type, params = content_type_params(request.headers.get("content-type", ""))
        part_type = params.get("type", "application/dicom").lower()
        if media_type != "multipart/related" or part_type != "application/dicom":
            raise HTTPException(415, detail='expected multipart/related; type="application/dicom"')
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            raise HTTPException(413, detail="request too large")
        with _SpooledBody() as spooled:
            async for chunk in request.stream():
                if spooled.size + len(chunk) > max_request_bytes:
                    raise HTTPException(413, detail="request too large")
                spooled.write(chunk)
            content = spooled.body()
            try:
                spans = list(part_spans(content, params.get("boundary", "")))
            except MultipartError as exc:
                raise HTTPException(400, detail=f"malformed multipart body: {exc}") from exc
            if not spans:
                raise HTTPException(400, detail="no instance in the request")

            stored: list[dict[str, Any]] = []
            failed: list[dict[str, Any]] = []
            for span in spans:
                data = content[span.start : span.end]  # this part only, in memory while it is ingested
                identity = _identify(data)
                if span.content_type not in ("", "application/dicom"):
                    failed.append(_item(identity, Verdict(StoreStatus.CANNOT_UNDERSTAND, "media type")))
                    continue
                if study is not None and identity is not None and identity.study_instance_uid != study:
                    verdict = Verdict(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "other study")
                    failed.append(_item(identity, verdict))
                    continue
                try:
                    outcome = await run_in_threadpool(sink.ingest_bytes, data, "stow-rs")
                    verdict = verdict_for_outcome(outcome)
                except Exception as exc:  # the client must hear "not stored", whatever broke
                    LOGGER.error("STOW-RS instance not stored: %s", type(exc).__name__)
                    verdict = verdict_for_error(exc)
                del data
                (stored if verdict.ok else failed).append(_item(identity, verdict))

        body: dict[str, Any] = {}
        if stored:
            body[_REFERENCED_SOP_SEQUENCE] = {"vr": "SQ", "Value": stored}
        if failed:
            body[_FAILED_SOP_SEQUENCE] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else 202 if stored else 409
        await run_in_threadpool(
            audit,
            str(getattr(principal, "name", "unknown")),
            "gateway.stow-rs",
            "dicomweb:studies" if study is None else "dicomweb:study",
            {"stored": len(stored), "failed": len(failed), "status": status},
            str(getattr(principal, "role", "")),
        )
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    @app.post("/dicomweb/studies")
    async def store_instances(request: Request, principal: Any = authenticated) -> JSONResponse:
        """Store instances of any studies."""
        return await store(request, principal)

    @app.post("/dicomweb/studies/{study}")
    async def store_study_instances(
        study: str, request: Request, principal: Any = authenticated
    ) -> JSONResponse:
        """Store instances of one study; instances of other studies fail (0xA900)."""
        return await store(request, principal, study)

    return app
