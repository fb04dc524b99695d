"""DICOMweb STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]`` with a
``multipart/related; type="application/dicom"`` body, answered with the Store Instances
Response Module in DICOM JSON (200 all stored, 202 some failed, 409 none stored).

Every route authenticates (bearer token, role ``pacs-client``); the interactive docs and the
OpenAPI document are off. Responses and logs carry reason codes, never patient data.
"""

from __future__ import annotations

import logging
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
from imaging.gateway.multipart import MultipartError, content_type_params, iter_parts
from imaging.gateway.scp import audit
from imaging.gateway.sink import Sink
from imaging.gateway.status import StoreStatus, Verdict, verdict_for_error, verdict_for_outcome

__all__ = ["DICOM_JSON", "create_stow_app", "default_auth_dependency"]

LOGGER = logging.getLogger(__name__)
DICOM_JSON = "application/dicom+json"

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
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                raise HTTPException(413, detail="request too large")
            chunks.append(chunk)
        try:
            parts = list(iter_parts(b"".join(chunks), params.get("boundary", "")))
        except MultipartError as exc:
            raise HTTPException(400, detail=f"malformed multipart body: {exc}") from exc
        if not parts:
            raise HTTPException(400, detail="no instance in the request")

        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for part in parts:
            identity = _identify(part.body)
            if part.content_type not in ("", "application/dicom"):
                failed.append(_item(identity, Verdict(StoreStatus.CANNOT_UNDERSTAND, "media type")))
                continue
            if study is not None and identity is not None and identity.study_instance_uid != study:
                verdict = Verdict(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "other study")
                failed.append(_item(identity, verdict))
                continue
            try:
                outcome = await run_in_threadpool(sink.ingest_bytes, part.body, "stow-rs")
                verdict = verdict_for_outcome(outcome)
            except Exception as exc:  # the client must hear "not stored", whatever broke
                LOGGER.error("STOW-RS instance not stored: %s", type(exc).__name__)
                verdict = verdict_for_error(exc)
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
