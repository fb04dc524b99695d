"""The UPS-RS worklist of AI tasks over real HTTP: the serving app under uvicorn on 127.0.0.1, a
real Orthanc as the PACS the inputs come from and the results go to, dicomweb-client for the
DICOMweb traffic. dicomweb-client has no UPS-RS methods: the worklist calls go through its
authenticated session, with workitems in the DICOM JSON model (pydicom).

A workitem created for an approved model ends COMPLETED with references to result objects that
are in the PACS; one for a model the gate refuses ends CANCELED with the gate's reason; malformed
workitems get 400 with the rule they break."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.unit import test_serving_api as serving_api

radgate_home, world = serving_api.radgate_home, serving_api.world

DICOM_JSON = "application/dicom+json"


@pytest.fixture(scope="module")
def app_url(world: dict[str, Any], orthanc: Any) -> Iterator[str]:
    """The serving API (the same app ``radgate serve`` mounts) under uvicorn, UPS-RS enabled."""
    import uvicorn

    from serving.api import api
    from serving.interop.ups import UpsConfig

    os.environ["RADGATE_UPS_SOURCE_PASSWORD"] = orthanc.password
    service = world["service"]
    ups = UpsConfig(source_dicomweb_url=orthanc.dicomweb_url, source_user=orthanc.user)
    service.config = service.config.model_copy(update={"ups": ups})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the serving app did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    os.environ.pop("RADGATE_UPS_SOURCE_PASSWORD", None)


@pytest.fixture(scope="module")
def pacs(orthanc: Any) -> Any:
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    return DICOMwebClient(
        url=orthanc.dicomweb_url, session=create_session_from_user_pass(orthanc.user, orthanc.password)
    )


@pytest.fixture(scope="module")
def worklist(app_url: str, world: dict[str, Any]) -> Any:
    """A dicomweb-client for the serving app (bearer token of the PACS client)."""
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=f"{app_url}/ups-rs", headers=serving_api._auth(world, "pacs"))


def _workitem(source: Dataset, task: str, retrieve_base: str) -> dict[str, Any]:
    item = Dataset()
    item.ProcedureStepState = "SCHEDULED"
    item.ScheduledProcedureStepPriority = "MEDIUM"
    item.ProcedureStepLabel = f"AI {task}"
    item.InputReadinessState = "READY"
    item.ScheduledProcedureStepStartDateTime = "20261206120000"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = task, "99RADGATE", f"RadGate model {task}"
    item.ScheduledWorkitemCodeSequence = [code]
    entry = Dataset()
    entry.StudyInstanceUID = source.StudyInstanceUID
    entry.SeriesInstanceUID = source.SeriesInstanceUID
    entry.TypeOfInstances = "DICOM"
    retrieval = Dataset()
    retrieval.RetrieveURL = f"{retrieve_base}/studies/{source.StudyInstanceUID}"
    entry.WADORSRetrievalSequence = [retrieval]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    entry.ReferencedSOPSequence = [ref]
    item.InputInformationSequence = [entry]
    return item.to_json_dict()


def _url(worklist: Any, path: str) -> str:
    return f"{worklist.base_url}{path}"  # base_url is the service root (.../ups-rs)


def _wait_final(worklist: Any, location: str, timeout_s: float = 120.0) -> Dataset:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = worklist._session.get(location, headers={"Accept": DICOM_JSON}, timeout=30)
        assert answer.status_code == 200, answer.text
        (data,) = answer.json()
        item = Dataset.from_json(data)
        assert "TransactionUID" not in item  # never shown to clients
        if item.ProcedureStepState in ("COMPLETED", "CANCELED"):
            return item
        time.sleep(0.2)
    raise AssertionError("the workitem did not reach a final state")


def _post(worklist: Any, body: Any, content_type: str = DICOM_JSON) -> Any:
    return worklist._session.post(
        _url(worklist, "/workitems"),
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={"Content-Type": content_type},
        timeout=30,
    )


def test_workitem_completes_with_results_in_the_pacs(
    world: dict[str, Any], worklist: Any, pacs: Any, orthanc: Any
) -> None:
    import highdicom as hd

    source = dcmread(world["files"][0])
    pacs.store_instances([source])
    created = _post(worklist, [_workitem(source, serving_api.MODEL, orthanc.dicomweb_url)])
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    item = _wait_final(worklist, location)
    assert item.ProcedureStepState == "COMPLETED", item.get("ProcedureStepProgressInformationSequence")
    assert item.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 100
    (performed,) = item.UnifiedProcedureStepPerformedProcedureSequence
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == serving_api.MODEL
    outputs = performed.OutputInformationSequence
    refs = [(o.StudyInstanceUID, o.SeriesInstanceUID, r) for o in outputs for r in o.ReferencedSOPSequence]
    assert refs and all(study == source.StudyInstanceUID for study, _, _ in refs)  # the source study
    kinds = set()
    for study, series, ref in refs:
        stored = pacs.retrieve_instance(study, series, ref.ReferencedSOPInstanceUID)  # really in the PACS
        assert stored.SOPClassUID == ref.ReferencedSOPClassUID
        kinds.add(stored.SOPClassUID)
        if stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33":
            report = hd.sr.ComprehensiveSR.from_dataset(stored)
            (group,) = cast(hd.sr.MeasurementReport, report.content).get_image_measurement_groups()
            assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID
        if stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4":
            overlay = hd.seg.Segmentation.from_dataset(stored)
            assert overlay.get_source_image_uids()[0][2] == source.SOPInstanceUID
    # SC overlay, SR (IHE AIR), saliency SEG the viewer overlays
    assert {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.88.33",
        "1.2.840.10008.5.1.4.1.1.66.4",
    } <= kinds
    searched = worklist._session.get(
        _url(worklist, "/workitems"), params={"ProcedureStepState": "COMPLETED"}, timeout=30
    )
    assert searched.status_code == 200 and any(
        d["00080018"]["Value"][0] == item.SOPInstanceUID for d in searched.json()
    )
    again = worklist._session.post(f"{location}/cancelrequest", timeout=30)
    assert again.status_code == 409  # final states are final


def test_gate_refusal_cancels_with_the_reason(
    world: dict[str, Any], worklist: Any, pacs: Any, orthanc: Any
) -> None:
    source = dcmread(world["files"][1])
    pacs.store_instances([source])
    created = _post(worklist, [_workitem(source, "pending-model", orthanc.dicomweb_url)])
    assert created.status_code == 201, created.text
    item = _wait_final(worklist, created.headers["Location"])
    assert item.ProcedureStepState == "CANCELED"
    progress = item.ProcedureStepProgressInformationSequence[0]
    assert "not approved" in progress.ReasonForCancellation
    assert progress.ProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "gate-refused"


def _broken(source: Dataset, base: str) -> list[tuple[str, Any, str]]:
    good = _workitem(source, serving_api.MODEL, base)
    no_inputs = {k: v for k, v in good.items() if k != "00404021"}
    in_progress = {**good, "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}
    unknown_task = _workitem(source, "no-such-model", base)
    elsewhere = _workitem(source, serving_api.MODEL, "http://169.254.169.254/dicom-web")
    with_transaction = {**good, "00081195": {"vr": "UI", "Value": ["1.2.3"]}}
    return [
        ("no inputs", [no_inputs], "Input Information Sequence"),
        ("wrong state", [in_progress], "SCHEDULED"),
        ("unknown task", [unknown_task], "AI task"),
        ("retrieve elsewhere", [elsewhere], "configured DICOMweb source"),
        ("transaction uid", [with_transaction], "Transaction UID"),
        ("two workitems", [good, good], "exactly one"),
        ("not dicom json", [{"ProcedureStepState": "SCHEDULED"}], "DICOM JSON"),
        ("not json", b"{nope", "not JSON"),
    ]


def test_malformed_workitems_get_a_clear_400(world: dict[str, Any], worklist: Any, orthanc: Any) -> None:
    source = dcmread(world["files"][0])
    for name, body, reason in _broken(source, orthanc.dicomweb_url):
        answer = _post(worklist, body)
        assert answer.status_code == 400, name
        assert reason in answer.json()["detail"], (name, answer.json())
        assert str(source.PatientID) not in answer.text
    assert _post(worklist, b"<xml/>", "application/xml").status_code == 415
    bare = worklist._session.post(
        _url(worklist, "/workitems"), data=b"[]", headers={"Authorization": "", "Content-Type": DICOM_JSON}
    )
    assert bare.status_code == 401
    assert worklist._session.get(_url(worklist, "/workitems/1.2.3"), timeout=30).status_code == 404
    assert worklist._session.get(_url(worklist, "/workitems/not-a-uid"), timeout=30).status_code == 400


def test_state_changes_need_the_transaction_uid(
    world: dict[str, Any], worklist: Any, orthanc: Any, tmp_path: Path
) -> None:
    from serving.interop.ups import WorkitemStore

    store = WorkitemStore(tmp_path / "ups")
    item = Dataset.from_json(_workitem(dcmread(world["files"][0]), serving_api.MODEL, orthanc.dicomweb_url))
    uid = store.create(item, serving_api.MODEL)
    store.claim(uid, "1.2.3.4")
    from serving.interop.ups import WorkitemError

    with pytest.raises(WorkitemError) as wrong:
        store.finish(uid, "9.9.9", "COMPLETED")
    assert wrong.value.status == 409
    store.finish(uid, "1.2.3.4", "CANCELED")
    assert (tmp_path / "ups" / f"{uid}.json").stat().st_mode & 0o077 == 0  # may hold patient data
    (tmp_path / "ups" / "2.25.9.json").write_text("{not json")  # a damaged file does not stop a restart
    reopened = WorkitemStore(tmp_path / "ups")  # durable: the same state after a restart
    assert reopened.get(uid).ProcedureStepState == "CANCELED"
    assert (tmp_path / "ups" / "2.25.9.unreadable").exists()


def test_subscriber_gets_state_events_over_websocket(
    world: dict[str, Any], worklist: Any, pacs: Any, orthanc: Any, app_url: str
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from serving.interop.ups_events import GLOBAL_SUBSCRIPTION_UID

    subscribed = worklist._session.post(
        _url(worklist, f"/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/RIS1")
    )
    assert subscribed.status_code == 201, subscribed.text
    assert worklist._session.post(_url(worklist, "/workitems/1.2.3/subscribers/RIS1")).status_code == 404
    assert (
        worklist._session.post(
            _url(worklist, f"/workitems/{GLOBAL_SUBSCRIPTION_UID}/subscribers/x%00y")
        ).status_code
        == 400
    )
    ws_url = app_url.replace("http://", "ws://") + "/ups-rs/subscribers/RIS1"
    headers = dict(serving_api._auth(world, "pacs"))
    with pytest.raises(InvalidStatus) as refused:  # no token: the handshake is refused
        connect(ws_url, open_timeout=10)
    assert refused.value.response.status_code == 403
    source = dcmread(world["files"][0])
    pacs.store_instances([source])
    with connect(ws_url, additional_headers=headers, open_timeout=10) as channel:
        created = _post(worklist, [_workitem(source, serving_api.MODEL, orthanc.dicomweb_url)])
        assert created.status_code == 201, created.text
        uid = created.headers["Location"].rsplit("/", 1)[1]
        states, progress = [], []
        while "COMPLETED" not in states and "CANCELED" not in states:
            event = Dataset.from_json(json.loads(channel.recv(timeout=120)))
            if event.AffectedSOPInstanceUID != uid:
                continue
            if event.EventTypeID == 1:
                states.append(event.ProcedureStepState)
            else:
                progress.append(int(event.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress))
    assert states == ["IN PROGRESS", "COMPLETED"]
    assert progress == sorted(progress) and progress[0] == 10  # retrieving, running, storing
