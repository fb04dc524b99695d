"""The HTTP API (FastAPI): every route needs a bearer token, predict needs a clinical role.

Routes: ``POST /v1/models/{name}/predict``, ``GET /v1/models``, ``GET /healthz``,
``GET /metrics`` (Prometheus), ``GET /openapi.json``. The app is independent of Ray: an
:class:`IngressService` holds the config, the per-request gate and one :class:`ModelClient`
per model (a Ray Serve handle in production, a local worker in unit tests).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from governance.approvals.registry import model_target
from governance.audit import GroupCommit
from governance.auth import Principal, Role, fastapi_dependency
from governance.tls import TransportSecurity
from serving import metrics
from serving.config import ServeConfig
from serving.inputs import Instance, RequestError, parse_body
from serving.methods import OVERLAY

__all__ = ["IngressService", "ModelClient", "api", "install_service"]

PREDICT_ROLES = (Role.PACS_CLIENT, Role.CLINICAL_REVIEWER, Role.ML_ENGINEER)
METRICS_ROLES = (Role.ML_ENGINEER, Role.ADMIN, Role.AUDITOR)
_ANY_USER = fastapi_dependency()


class ModelClient(Protocol):
    async def info(self) -> dict[str, Any]: ...

    async def predict(self, payload: dict[str, Any]) -> dict[str, Any]: ...


class IngressService:
    """What the routes need: config, gate (short TTL cache) and model clients."""

    def __init__(self, config: ServeConfig, models: dict[str, ModelClient]) -> None:
        from governance.approvals import Gate
        from serving.interop import start_interop

        self.config = config
        self.models = models
        self.gate = Gate(ttl_s=config.gate_ttl_s)
        self.gate.warm_up()  # client, catalog and ORM ready before the first request's decision
        # FHIR results for the EMR and ATNA audit export, when configured (background senders).
        self.interop = start_interop(config.fhir, config.atna)


_service: IngressService | None = None


def install_service(service: IngressService) -> None:
    global _service
    _service = service


def _svc() -> IngressService:
    if _service is None:
        raise HTTPException(503, "serving is starting")
    return _service


api = FastAPI(
    title="RadGate serving",
    version="1",
    description="Approved medical-imaging models behind the RadGate governance gate.",
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)
api.add_middleware(TransportSecurity)  # served over HTTPS: HSTS on every response, cookies Secure


def _install_feedback() -> None:
    """Clinician feedback on the same API: ``POST /v1/feedback``, clinical-reviewer role."""
    from serving.monitoring.feedback import feedback_router

    api.include_router(feedback_router())


_install_feedback()


def _install_reviewer_ui() -> None:
    """The reviewer web UI under ``/ui`` on the serving port: its recent predictions are
    this API's requests."""
    from serving.ui import install_ui

    install_ui(api)


_install_reviewer_ui()


def _install_worklist() -> None:
    """The UPS-RS worklist of AI tasks under ``/ups-rs`` (when the config has ``ups:``)."""
    from serving.interop.ups_routes import ups_router

    api.include_router(ups_router(_svc, PREDICT_ROLES))


_install_worklist()


# Audit entries of concurrent requests share one catalog transaction (group commit); each request
# still waits for its own entry to be committed before it answers.
_AUDIT = GroupCommit()


async def _audit(actor: str, role: str, action: str, target: str, details: dict[str, Any]) -> None:
    await _AUDIT.record(actor, action, target, details, role=role)


class _RejectionTally:
    """Unauthenticated rejections, aggregated: the first per route and status in each window is
    audited at once; the rest are counted and audited as one ``serve.auth.denied`` entry (with
    ``count``) when the next window opens, so a flood of bad tokens cannot flood the log."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._opened: dict[tuple[str, int], float] = {}
        self._suppressed: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def admit(self, route: str, status: int) -> int | None:
        """How many rejections the entry to write now stands for (None: counted, write nothing)."""
        key, now = (route, status), time.monotonic()
        with self._lock:
            if key in self._opened and now - self._opened[key] < self.window_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            if len(self._opened) > 1024:  # routes are bounded, but never let this grow
                self._opened.clear()
            self._opened[key] = now
            return 1 + self._suppressed.pop(key, 0)


_REJECTIONS = _RejectionTally()
_REASON_ROLES = frozenset({"admin", "ml-engineer", "auditor"})


def _denial_detail(role: str, reasons: list[str]) -> str:
    """Gate reasons (policy checks, audit chain state) only for roles that act on them; a
    PACS client learns that the model is not approved, the audit log keeps why."""
    if role in _REASON_ROLES:
        return "model not approved for serving: " + "; ".join(reasons)
    return "model not approved for serving"


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code in (401, 403) and request.url.path.startswith("/v1/"):
        # Failed authentication / authorisation is part of the audit trail (no token, no PHI).
        route = f"route:{request.url.path[:120]}"
        count = _REJECTIONS.admit(route, exc.status_code)
        if count is not None:
            await _audit(
                "anonymous", "", "serve.auth.denied", route, {"status": exc.status_code, "count": count}
            )
        metrics.DENIALS.labels(reason="auth").inc()
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = sorted({".".join(str(p) for p in err.get("loc", ())) for err in exc.errors()})
    return JSONResponse({"detail": f"invalid request parameters: {', '.join(fields)}"}, status_code=422)


@api.get("/openapi.json", include_in_schema=False)
async def openapi(_: Principal = Depends(_ANY_USER)) -> JSONResponse:
    return JSONResponse(api.openapi())


@api.get("/healthz", summary="Liveness and which models are loaded")
async def healthz(_: Principal = Depends(_ANY_USER)) -> dict[str, Any]:
    service = _svc()
    infos = await asyncio.gather(*(client.info() for client in service.models.values()))
    return {"status": "ok", "models": {i["name"]: bool(i.get("loaded")) for i in infos}}


@api.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(_: Principal = Depends(fastapi_dependency(*METRICS_ROLES))) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@api.get("/v1/models", summary="Served models with version and approval state")
async def list_models(_: Principal = Depends(_ANY_USER)) -> dict[str, Any]:
    service = _svc()
    infos = await asyncio.gather(*(client.info() for client in service.models.values()))
    out = []
    for info in infos:
        served = service.config.model(info["name"])
        decision = await asyncio.to_thread(_gate, service, info["name"])
        out.append({**info, "backend": served.backend.value if served else None, "gate": decision.to_dict()})
    return {"models": out}


def _gate(service: IngressService, name: str) -> Any:
    served = service.config.model(name)
    assert served is not None
    return service.gate(served.name, served.alias, version=served.version)


def _parse_and_gate(
    service: IngressService, name: str, body: bytes, content_type: str | None
) -> tuple[list[Instance], Any, Any]:
    """Parse the body, then ask the gate, in one worker-thread call (a hop fewer per request).
    The decision is None when the part count needs the model's task to be accepted
    (:func:`_check_part_count`, on the event loop): the gate is asked after that check.
    When one image is allowed and its model runs in this process (``prepare_one``, a colocated
    model), that model decodes and forwards it in the same call, after the decision: the
    third item (None otherwise), which the model's ``predict`` then uses."""
    instances = parse_body(
        body,
        content_type,
        max_bytes=service.config.max_body_bytes,
        max_parts=max(service.config.max_instances_per_request, service.config.max_series_instances),
    )
    if len(instances) > service.config.max_instances_per_request:
        return instances, None, None
    decision = _gate(service, name)
    prepare = getattr(service.models.get(name), "prepare_one", None)
    prepared = None
    if prepare is not None and len(instances) == 1 and decision.allowed and decision.version is not None:
        prepared = prepare(str(decision.version), instances[0].data)
    return instances, decision, prepared


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON results, or the DICOM result objects (SC overlay + SR; for a segmentation "
        "model SEG + SR) as multipart/related",
        "content": {"application/json": {}, 'multipart/related; type="application/dicom"': {}},
    },
    400: {"description": "corrupt or malformed input"},
    401: {"description": "missing or invalid token"},
    403: {"description": "role not allowed, or model not approved (reasons)"},
    404: {"description": "model not served"},
    413: {"description": "body too large"},
    415: {"description": "unsupported content type"},
    422: {"description": "input cannot be used by the model"},
}


@api.post(
    "/v1/models/{name}/predict",
    summary="Predict (and optionally explain) one DICOM instance or a series",
    responses=_PREDICT_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                'multipart/related; type="application/dicom"': {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    },
)
async def predict(
    name: str,
    request: Request,
    explain: str | None = Query(
        None,
        max_length=32,
        description="overlay (the model family's method), gradcam, hirescam, saliency, ig, occlusion or none",
    ),
    response: str = Query("json", pattern="^(json|dicom)$", description="json, or dicom (multipart/related)"),
    push: bool = Query(False, description="also C-STORE the DICOM results to the configured PACS"),
    principal: Principal = Depends(fastapi_dependency(*PREDICT_ROLES)),
) -> Response:
    service = _svc()
    started = time.perf_counter()
    actor, role = principal.name, principal.role.value
    served = service.config.model(name)
    if served is None:
        metrics.REQUESTS.labels(model="unknown", status="404").inc()
        raise HTTPException(404, "no such served model")
    chosen = explain or served.explain_default
    method: str | None = None if chosen == "none" else chosen
    want_dicom = response == "dicom" or push
    if want_dicom and method is None:
        method = OVERLAY  # the SC overlay needs a map: the model family's overlay method
    try:
        body = await _read_body(request, service.config.max_body_bytes)
        instances, decision, prepared = await asyncio.to_thread(
            _parse_and_gate, service, name, body, request.headers.get("content-type")
        )
        await _check_part_count(service, name, len(instances))
    except RequestError as exc:
        return await _refuse(name, actor, role, exc.status, exc.message, started)
    digests = [i.sha256 for i in instances]
    if decision is None:  # a series: gated once its part count was accepted
        decision = await asyncio.to_thread(_gate, service, name)
    target = model_target(name, decision.version or "?")
    if not decision.allowed:
        metrics.DENIALS.labels(reason="gate").inc()
        metrics.REQUESTS.labels(model=name, status="403").inc()
        await _audit(
            actor,
            role,
            "serve.predict.denied",
            target,
            {"inputs_sha256": digests[:16], "reasons": decision.reasons[:5]},
        )
        raise HTTPException(403, _denial_detail(role, decision.reasons))
    payload = {
        "instances": [i.data for i in instances],
        "version": decision.version,
        "explain": method,
        "dicom": want_dicom,
    }
    if prepared is not None:  # decoded (and forwarded) in the call above: same process, no copy
        payload["prepared"] = prepared
    out = await service.models[name].predict(payload)
    if "error" in out:
        error = out["error"]
        message = str(error["message"])
        if error["status"] == 403:
            metrics.DENIALS.labels(reason="gate").inc()
            if role not in _REASON_ROLES:
                message = message.split(":", 1)[0]
        return await _refuse(name, actor, role, int(error["status"]), message, started, target, digests)
    groups: list[list[bytes]] = out.pop("objects")
    objects: list[bytes] = [obj for group in groups for obj in group]
    pushed = None
    if push:
        pushed = await asyncio.to_thread(_push, service, objects)
    if service.config.fhir is not None:
        from serving.interop import record_results

        # Preliminary DiagnosticReport per result, queued durably for the EMR (final on review).
        await asyncio.to_thread(record_results, service.config.fhir, out, [i.data for i in instances], groups)
    elapsed = time.perf_counter() - started
    for size in out.pop("batch_sizes"):
        metrics.BATCH.labels(model=name).observe(size)
    for result in out["results"]:
        label = result["decision"]["label"] if "decision" in result else result.get("task", "")
        metrics.PREDICTIONS.labels(model=name, label=label).inc()
    metrics.REQUESTS.labels(model=name, status="200").inc()
    metrics.LATENCY.labels(model=name).observe(elapsed)
    audit_started = time.perf_counter()
    await _audit(
        actor,
        role,
        "serve.predict",
        target,
        {
            "inputs_sha256": digests[:16],
            "n": len(instances),
            "explain": method or "none",
            "response": response,
            "pushed": None if pushed is None else pushed["sent"],
            "ms": round(elapsed * 1000, 1),
        },
    )
    out["timings_ms"]["total"] = round(elapsed * 1000, 2)
    # The commit of this request's audit entry, awaited before the answer (after ``total``).
    out["timings_ms"]["audit"] = round((time.perf_counter() - audit_started) * 1000, 2)
    if pushed is not None:
        out["pushed"] = pushed
    if response == "dicom":
        from imaging.gateway.multipart import build_related

        content, content_type = build_related(objects)
        return Response(content, media_type=content_type)
    return JSONResponse(out)


async def _check_part_count(service: IngressService, name: str, count: int) -> None:
    """Classification takes at most ``max_instances_per_request``; a segmentation model one series."""
    if count <= service.config.max_instances_per_request:
        return
    info = await service.models[name].info()
    if info.get("task") != "segmentation":
        raise RequestError(413, f"at most {service.config.max_instances_per_request} instances per request")


async def _refuse(
    name: str,
    actor: str,
    role: str,
    status: int,
    message: str,
    started: float,
    target: str | None = None,
    digests: list[str] | None = None,
) -> JSONResponse:
    metrics.REQUESTS.labels(model=name if _svc().config.model(name) else "unknown", status=str(status)).inc()
    await _audit(
        actor,
        role,
        "serve.predict.rejected",
        target or f"model:{name}",
        {
            "status": status,
            "inputs_sha256": (digests or [])[:16],
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return JSONResponse({"detail": message}, status_code=status)


def _push(service: IngressService, objects: list[bytes]) -> dict[str, Any]:
    from imaging.gateway.push import PushError, push_files

    if service.config.pacs is None:
        return {"sent": 0, "failed": len(objects), "error": "no PACS configured"}
    with tempfile.TemporaryDirectory(prefix="radgate-results-") as tmp:
        for index, data in enumerate(objects):
            (Path(tmp) / f"{index:03d}.dcm").write_bytes(data)
        try:
            report = push_files(service.config.pacs, [Path(tmp)], calling_ae=service.config.calling_ae)
        except PushError as exc:
            return {"sent": 0, "failed": len(objects), "error": str(exc)}
    return {"sent": report.sent, "failed": len(report.failed) + len(report.skipped)}
