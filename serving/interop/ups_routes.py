"""UPS-RS (DICOM PS3.18 11, Worklist Service) under ``/ups-rs`` of the serving API, and the
performer that runs each AI task through the gate.

Routes (bearer token; roles of the predict route): ``POST /ups-rs/workitems`` (create; 201 and
Location), ``GET /ups-rs/workitems`` (search by ``ProcedureStepState``), ``GET
/ups-rs/workitems/{uid}`` (retrieve), ``POST /ups-rs/workitems/{uid}?transaction=`` (update),
``PUT /ups-rs/workitems/{uid}/state`` (change state), ``POST /ups-rs/workitems/{uid}/cancelrequest``,
``POST``/``DELETE /ups-rs/workitems/{uid}/subscribers/{ae}`` (subscriptions; the global UID follows
every workitem) and the WebSocket event channel ``/ups-rs/subscribers/{ae}``
(:mod:`serving.interop.ups_events`).
Bodies are ``application/dicom+json``. A workitem that breaks a rule gets 400 with the rule.

The performer (:func:`perform`): claims the workitem (IN PROGRESS with its own Transaction UID),
retrieves the inputs by WADO-RS from the configured source, asks the gate, runs the approved model
with the DICOM results (SC overlay, SR, saliency SEG), stores them to the source by STOW-RS and
completes the workitem with references to them (Output Information Sequence); when the gate
refuses (or anything fails) the workitem is CANCELED with the reason. Every step is audited.
"""

# No `from __future__ import annotations`: Ray Serve pickles the ingress app by value, and the
# route closures below must carry their annotations as objects, not names it cannot resolve.

import asyncio
import json
import logging
import os
from collections.abc import Callable
from io import BytesIO
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from governance.approvals.registry import model_target
from governance.audit import record
from governance.auth import (
    AuthenticationError,
    PermissionDenied,
    Principal,
    authenticate,
    fastapi_dependency,
    require_role,
)
from governance.settings import get_settings
from serving.interop.ups import (
    CANCELED,
    COMPLETED,
    IN_PROGRESS,
    RADGATE_SCHEME,
    UpsConfig,
    WorkitemError,
    WorkitemStore,
    checked_uid,
    now_dt,
    parse_dataset,
    parse_workitem,
    workitem_inputs,
)
from serving.interop.ups_events import GLOBAL_SUBSCRIPTION_UID, EventHub, valid_ae_title
from serving.methods import OVERLAY

__all__ = ["perform", "ups_router"]

LOGGER = logging.getLogger(__name__)
PERFORMER = "radgate-ups"
_MAX_BODY = 1024 * 1024
_DICOM_JSON = "application/dicom+json"


def _code(value: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, RADGATE_SCHEME, meaning[:64]
    return code


def _progress(percent: int, text: str) -> Dataset:
    changes = Dataset()
    progress = Dataset()
    progress.ProcedureStepProgress = percent
    progress.ProcedureStepProgressDescription = text[:64]
    changes.ProcedureStepProgressInformationSequence = [progress]
    return changes


def _source_client(config: UpsConfig) -> Any:
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    session = None
    if config.source_user:
        session = create_session_from_user_pass(
            config.source_user, os.environ.get(config.source_password_env, "")
        )
    return DICOMwebClient(url=config.source_dicomweb_url, session=session)


def _outputs(objects: list[bytes], base_url: str) -> list[Dataset]:
    """Output Information Sequence items: one per result series, with its instances."""
    series: dict[str, Dataset] = {}
    for data in objects:
        header = dcmread(BytesIO(data), stop_before_pixels=True)
        item = series.get(header.SeriesInstanceUID)
        if item is None:
            item = Dataset()
            item.StudyInstanceUID = header.StudyInstanceUID
            item.SeriesInstanceUID = header.SeriesInstanceUID
            item.TypeOfInstances = "DICOM"
            retrieval = Dataset()
            retrieval.RetrieveURL = (
                f"{base_url}/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
            )
            item.WADORSRetrievalSequence = [retrieval]
            item.ReferencedSOPSequence = []
            series[header.SeriesInstanceUID] = item
        ref = Dataset()
        ref.ReferencedSOPClassUID = header.SOPClassUID
        ref.ReferencedSOPInstanceUID = header.SOPInstanceUID
        item.ReferencedSOPSequence.append(ref)
    return list(series.values())


async def perform(uid: str, store: WorkitemStore, config: UpsConfig, service: Any) -> str:
    """Claim and run one workitem; returns its final state."""
    transaction = generate_uid(prefix="2.25.")
    try:
        item = store.claim(uid, transaction)
    except WorkitemError:  # claimed or canceled by someone else meanwhile
        return str(store.get(uid).ProcedureStepState)
    model = store.model(uid)
    started = now_dt()
    record(PERFORMER, "ups.claim", f"workitem:{uid}", {"model": model})
    try:
        store.update(uid, transaction, _progress(10, "retrieving inputs"))
        inputs = workitem_inputs(item, config)
        client = _source_client(config)
        instances = await asyncio.gather(
            *(
                asyncio.to_thread(client.retrieve_instance, i.study_uid, i.series_uid, i.sop_instance_uid)
                for i in inputs
            )
        )
        data = [_encode(d) for d in instances]
        served = service.config.model(model)
        decision = await asyncio.to_thread(service.gate, served.name, served.alias, version=served.version)
        target = model_target(model, decision.version or "?")
        if not decision.allowed:
            reason = "model not approved for serving: " + "; ".join(decision.reasons[:5])
            return _cancel(store, uid, transaction, reason, target, "gate-refused")
        store.update(uid, transaction, _progress(40, f"running {model} v{decision.version}"))
        payload = {"instances": data, "version": decision.version, "explain": OVERLAY, "dicom": True}
        out = await service.models[model].predict(payload)
        if "error" in out:
            return _cancel(
                store, uid, transaction, str(out["error"]["message"])[:1000], target, "model-error"
            )
        objects = [obj for group in out.pop("objects") for obj in group]
        store.update(uid, transaction, _progress(80, "storing results"))
        await asyncio.to_thread(client.store_instances, [dcmread(BytesIO(o)) for o in objects])
        if service.config.fhir is not None:
            from serving.interop.emr import record_results

            await asyncio.to_thread(record_results, service.config.fhir, out, data, [objects])
        performed = Dataset()
        performed.PerformedProcedureStepStartDateTime = started
        performed.PerformedProcedureStepEndDateTime = now_dt()
        performed.PerformedStationNameCodeSequence = [_code("radgate", "RadGate")]
        performed.PerformedWorkitemCodeSequence = [item.ScheduledWorkitemCodeSequence[0]]
        performed.OutputInformationSequence = _outputs(objects, config.source_dicomweb_url.rstrip("/"))
        done = _progress(100, "completed")
        done.UnifiedProcedureStepPerformedProcedureSequence = [performed]
        store.finish(uid, transaction, COMPLETED, done)
        record(
            PERFORMER,
            "ups.complete",
            f"workitem:{uid}",
            {
                "model": target,
                "outputs": len(objects),
                "findings": [r.get("finding") for r in out["results"]][:16],
            },
        )
        return COMPLETED
    except Exception as exc:  # retrieval, codec or PACS failure: the workitem must not stay IN PROGRESS
        LOGGER.warning("workitem %s failed: %s", uid, type(exc).__name__)
        reason = f"RadGate could not perform the task ({type(exc).__name__})"
        return _cancel(store, uid, transaction, reason, f"model:{model}", "failed")


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _cancel(store: WorkitemStore, uid: str, transaction: str, reason: str, target: str, code: str) -> str:
    changes = _progress(100, "canceled")
    progress = changes.ProcedureStepProgressInformationSequence[0]
    progress.ProcedureStepCancellationDateTime = now_dt()
    progress.ReasonForCancellation = reason[:1024]
    progress.ProcedureStepDiscontinuationReasonCodeSequence = [_code(code, reason)]
    store.finish(uid, transaction, CANCELED, changes)
    record(PERFORMER, "ups.cancel", f"workitem:{uid}", {"model": target, "reason": code})
    return CANCELED


def ups_router(service_getter: Callable[[], Any], roles: tuple[Any, ...]) -> Any:
    """The UPS-RS routes; ``service_getter`` returns the ingress service (config, gate, models)."""
    router = APIRouter(prefix="/ups-rs", tags=["ups-rs"])
    stores: dict[str, WorkitemStore] = {}
    hub = EventHub()
    tasks: set[asyncio.Task[str]] = set()

    def setup() -> tuple[Any, UpsConfig, WorkitemStore]:
        service = service_getter()
        config = service.config.ups
        if config is None:
            raise HTTPException(404, "the UPS-RS worklist is not enabled")
        root = config.store or get_settings().home / "ups"
        if str(root) not in stores:
            stores[str(root)] = WorkitemStore(root, limit=config.max_workitems)
            stores[str(root)].listeners.append(hub.listener())
        return service, config, stores[str(root)]

    async def body(request: Request) -> Any:
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media not in (_DICOM_JSON, "application/json"):
            raise WorkitemError(415, "the body must be application/dicom+json")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > _MAX_BODY:
                raise WorkitemError(413, f"the body exceeds {_MAX_BODY} bytes")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise WorkitemError(400, "the body is not JSON") from exc

    def answer(items: list[Dataset], status: int = 200, headers: dict[str, str] | None = None) -> Response:
        content = json.dumps([i.to_json_dict() for i in items])
        return Response(content, status_code=status, media_type=_DICOM_JSON, headers=headers)

    def refuse(exc: WorkitemError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.message},
            status_code=exc.status,
            headers={"Warning": f'299 RadGate "{exc.message[:200]}"'},
        )

    caller = Depends(fastapi_dependency(*roles))

    @router.post("/workitems", status_code=201, summary="Create a UPS workitem for an AI task")
    async def create(
        request: Request, workitem: str | None = None, principal: Principal = caller
    ) -> Response:
        service, config, store = setup()
        try:
            item, model, _ = parse_workitem(
                await body(request), config, {m.name for m in service.config.models}
            )
            uid = store.create(item, model, workitem if workitem is None else _checked_uid(workitem))
        except WorkitemError as exc:
            record(
                principal.name,
                "ups.create.rejected",
                "worklist:ups",
                {"status": exc.status},
                role=principal.role.value,
            )
            return refuse(exc)
        record(principal.name, "ups.create", f"workitem:{uid}", {"model": model}, role=principal.role.value)
        if config.auto_claim:
            task = asyncio.create_task(perform(uid, store, config, service))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        location = str(request.url_for("retrieve", uid=uid))
        return Response(status_code=201, headers={"Location": location})

    @router.get("/workitems", summary="Search workitems")
    async def search(
        ProcedureStepState: str | None = None,
        limit: int = 100,
        _: Principal = caller,
    ) -> Response:
        store = setup()[2]
        found = list(store.search(ProcedureStepState, max(1, min(limit, 1000))))
        return answer(found) if found else Response(status_code=204)

    @router.get("/workitems/{uid}", name="retrieve", summary="Retrieve a workitem")
    async def retrieve(uid: str, _: Principal = caller) -> Response:
        store = setup()[2]
        try:
            return answer([store.public(_checked_uid(uid))])
        except WorkitemError as exc:
            return refuse(exc)

    @router.post("/workitems/{uid}", summary="Update a workitem")
    async def update(
        uid: str, request: Request, transaction: str | None = None, _: Principal = caller
    ) -> Response:
        store = setup()[2]
        try:
            store.update(_checked_uid(uid), transaction, parse_dataset(await body(request)))
        except WorkitemError as exc:
            return refuse(exc)
        return Response(status_code=200)

    @router.put("/workitems/{uid}/state", summary="Change the state of a workitem")
    async def change_state(uid: str, request: Request, principal: Principal = caller) -> Response:
        store = setup()[2]
        try:
            changes = parse_dataset(await body(request))
            state = str(changes.get("ProcedureStepState", "") or "")
            transaction = str(changes.get("TransactionUID", "") or "")
            if not transaction:
                raise WorkitemError(400, "a state change must carry the Transaction UID")
            if state == IN_PROGRESS:
                store.claim(_checked_uid(uid), _checked_uid(transaction))
            else:
                store.finish(_checked_uid(uid), transaction, state)
        except WorkitemError as exc:
            return refuse(exc)
        record(principal.name, "ups.state", f"workitem:{uid}", {"state": state}, role=principal.role.value)
        return Response(status_code=200)

    @router.post("/workitems/{uid}/cancelrequest", summary="Request cancellation of a workitem")
    async def cancel_request(uid: str, principal: Principal = caller) -> Response:
        store = setup()[2]
        try:
            store.cancel_scheduled(_checked_uid(uid), f"cancellation requested by {principal.name}")
        except WorkitemError as exc:
            return refuse(exc)
        record(principal.name, "ups.cancelrequest", f"workitem:{uid}", {}, role=principal.role.value)
        return Response(status_code=202)

    @router.post("/workitems/{uid}/subscribers/{ae}", status_code=201, summary="Subscribe to a workitem")
    async def subscribe(uid: str, ae: str, principal: Principal = caller) -> Response:
        store = setup()[2]
        try:
            subscription = _subscription(store, uid, ae)
        except WorkitemError as exc:
            return refuse(exc)
        hub.subscribe(ae, subscription)
        record(
            principal.name, "ups.subscribe", f"workitem:{subscription}", {"ae": ae}, role=principal.role.value
        )
        return Response(status_code=201)

    @router.delete("/workitems/{uid}/subscribers/{ae}", summary="Unsubscribe from a workitem")
    async def unsubscribe(uid: str, ae: str, _: Principal = caller) -> Response:
        store = setup()[2]
        try:
            hub.unsubscribe(ae, _subscription(store, uid, ae))
        except WorkitemError as exc:
            return refuse(exc)
        return Response(status_code=200)

    @router.websocket("/subscribers/{ae}")
    async def event_channel(websocket: WebSocket, ae: str) -> None:
        """The event channel of ``ae``: one DICOM JSON event report per message."""
        try:
            principal = authenticate(
                websocket.headers.get("authorization", "").removeprefix("Bearer ").strip()
            )
            require_role(principal, *roles)
        except (AuthenticationError, PermissionDenied):
            await websocket.close(code=1008)  # policy violation: no valid token for this role
            return
        if not valid_ae_title(ae):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        queue = hub.open(ae)
        closed = asyncio.ensure_future(websocket.receive())
        try:
            while True:
                message = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({message, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    message.cancel()
                    return
                await websocket.send_text(message.result())
        except WebSocketDisconnect:
            return
        finally:
            hub.close(ae, queue)
            closed.cancel()

    router.running_tasks = tasks  # type: ignore[attr-defined]
    return router


def _subscription(store: WorkitemStore, uid: str, ae: str) -> str:
    if not valid_ae_title(ae):
        raise WorkitemError(400, "the subscriber must be an AE title (1-16 letters, digits, space, _ . -)")
    if uid == GLOBAL_SUBSCRIPTION_UID:
        return uid
    store.get(_checked_uid(uid))  # 404 for an unknown workitem
    return uid


def _checked_uid(value: str) -> str:
    return checked_uid(value, "the workitem UID")
