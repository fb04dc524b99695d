"""End to end through a real Ray Serve on 127.0.0.1 (one instance for the module): models
registered in a real MLflow SQLite store, approved through the real workflow, real DICOM in,
results pushed into a real Orthanc and read back with a DICOMweb client; unapproved and
tampered versions refused at load; a revocation stops serving within the gate's TTL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.net import free_port

pytestmark = pytest.mark.integration

MODEL = "chest-opacity"


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RADGATE_HOME shared with the Ray workers (they inherit the environment)."""
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "33" * 32)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def served(
    radgate_home: Path, orthanc: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve

    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.app import run, start_ray
    from serving.config import ServeConfig
    from serving.testing import approve_and_promote, register_model

    cast = create_cast()
    version = register_model(MODEL)
    approve_and_promote(MODEL, version, cast)
    _log_reference_profile(MODEL, version, tmp_path_factory.mktemp("reference"))
    pending = register_model("pending-model", seed=1)
    tampered = register_model("tampered-model", seed=2)
    approve_and_promote("tampered-model", tampered, cast)
    remote = register_model("remote-model", seed=3)
    approve_and_promote("remote-model", remote, cast)
    # Change the approved artifact's weights on disk after approval.
    _tamper(radgate_home, "tampered-model", tampered)

    port = free_port()
    config = ServeConfig.model_validate(
        {
            "port": port,
            "gate_ttl_s": 2,
            "ingress_num_cpus": 0.5,
            "pacs": {
                "name": "orthanc",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
            },
            "drift": {"interval_s": 2, "window": "1h", "models": [MODEL]},
            "models": [
                # Colocated in the ingress replica (the default for one CPU replica)...
                {"name": MODEL, "num_cpus": 0.5, "max_batch_size": 4},
                {"name": "tampered-model", "num_cpus": 0.5},
                # ... and deployments of their own (reached through a Ray Serve handle).
                {"name": "pending-model", "version": pending, "num_cpus": 0.25, "colocate": False},
                {"name": "remote-model", "num_cpus": 0.25, "colocate": False},
            ],
        }
    )
    temp = f"/tmp/rg-ray-{os.getpid()}"
    start_ray(config, num_cpus=2, temp_dir=temp)  # the ingress answers on the port itself
    try:
        run(config)
        files = write_demo_studies(
            tmp_path_factory.mktemp("demo"), patients=3, images_per_patient=1, size=64, seed=5
        ).files
        yield {
            "url": f"http://127.0.0.1:{port}",
            "cast": cast,
            "version": version,
            "remote_version": remote,
            "files": files,
            "orthanc": orthanc,
        }
    finally:
        serve.shutdown()
        ray.shutdown()


def _log_reference_profile(name: str, version: str, folder: Path) -> None:
    """What training logs for monitoring: the reference profile of the version's run."""
    from imaging.demo_data import write_demo_studies
    from training.preprocess import IMAGE_KEY
    from training.reference_profile import compute_reference_profile, log_reference_profile
    from training.registry import load_model

    loaded = load_model(f"{name}/{version}")
    files = write_demo_studies(folder, patients=4, images_per_patient=1, size=64, seed=9).files
    rows = [{IMAGE_KEY: str(p)} for p in files]
    profile = compute_reference_profile(
        loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
    )
    log_reference_profile(str(loaded.run_id), profile)


def _tamper(home: Path, name: str, version: str) -> None:
    """Overwrite one byte of the version's stored weights (what an attacker with disk access does)."""
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings

    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(uri, registry_uri=uri)
    download = client.get_model_version_download_uri(name, version)
    assert download.startswith("file://"), download
    root = Path(download.removeprefix("file://"))
    weights = next(p for p in root.rglob("*.pth"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def _headers(served: dict[str, Any], who: str = "pacs", content_type: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {served['cast'].tokens[who]}"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def test_predict_from_dicom_bytes(served: dict[str, Any]) -> None:
    reply = httpx.post(
        f"{served['url']}/v1/models/{MODEL}/predict",
        content=served["files"][0].read_bytes(),
        headers=_headers(served, content_type="application/dicom"),
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == {"name": MODEL, "version": served["version"], "backend": "inprocess"}
    assert body["results"][0]["labels"] == ["no_finding", "opacity"]


def test_the_ingress_replica_answers_http_itself(served: dict[str, Any]) -> None:
    """Direct ingress: the process listening on the configured port (127.0.0.1 only) is the
    ingress replica, not Ray Serve's HTTP proxy actor, and it authenticates as the proxy did."""
    import httpx
    import psutil

    port = int(served["url"].rsplit(":", 1)[1])
    listeners = [
        c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert [c.laddr.ip for c in listeners] == ["127.0.0.1"]
    name = " ".join(psutil.Process(listeners[0].pid).cmdline())
    assert "ServeReplica" in name and "ingress" in name, name
    assert httpx.get(f"{served['url']}/v1/models", timeout=30).status_code == 401


def test_predict_through_a_model_deployment_of_its_own(served: dict[str, Any]) -> None:
    """``colocate: false``: the ingress calls the model's own deployment through a handle."""
    files = served["files"]
    boundary = "radgate-remote"
    body = (
        b"".join(
            b"--"
            + boundary.encode()
            + b"\r\nContent-Type: application/dicom\r\n\r\n"
            + p.read_bytes()
            + b"\r\n"
            for p in files[:2]
        )
        + b"--"
        + boundary.encode()
        + b"--\r\n"
    )
    reply = httpx.post(
        f"{served['url']}/v1/models/remote-model/predict",
        content=body,
        headers=_headers(
            served, content_type=f'multipart/related; type="application/dicom"; boundary={boundary}'
        ),
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["model"]["version"] == served["remote_version"] and len(answer["results"]) == 2
    assert answer["approval"]["version"] == served["remote_version"]


def test_models_health_metrics_through_serve(served: dict[str, Any]) -> None:
    url = served["url"]
    models = httpx.get(f"{url}/v1/models", headers=_headers(served), timeout=60).json()["models"]
    state = {m["name"]: m for m in models}
    assert state[MODEL]["loaded"] and state[MODEL]["version"] == served["version"]
    assert not state["pending-model"]["loaded"]
    assert not state["tampered-model"]["loaded"]
    assert any("artifact" in reason for reason in state["tampered-model"]["denied"])
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 401
    health = httpx.get(f"{url}/healthz", headers=_headers(served), timeout=30).json()
    assert health["models"] == {
        MODEL: True,
        "pending-model": False,
        "tampered-model": False,
        "remote-model": True,
    }
    metrics = httpx.get(f"{url}/metrics", headers=_headers(served, "eng"), timeout=30).text
    assert "radgate_serve_requests_total" in metrics


def test_serving_runs_periodic_drift_checks(served: dict[str, Any]) -> None:
    """The serve config's ``drift:`` schedule runs in the ingress: served requests are recorded,
    checked every 2 s (audited), and the drift gauges are on the serving /metrics."""
    from governance.audit import AuditLog

    reply = httpx.post(
        f"{served['url']}/v1/models/{MODEL}/predict",
        content=served["files"][1].read_bytes(),
        headers=_headers(served, content_type="application/dicom"),
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    gauge = f'radgate_drift_live_samples{{model="{MODEL}"}}'
    deadline, metrics = time.monotonic() + 90, ""
    while gauge not in metrics and time.monotonic() < deadline:
        time.sleep(1)
        metrics = httpx.get(f"{served['url']}/metrics", headers=_headers(served, "eng"), timeout=30).text
    assert gauge in metrics
    checks = AuditLog().entries(action="monitoring.drift.checked", actor="radgate-monitor")
    assert checks and checks[0].target == f"model:{MODEL}/{served['version']}"
    # feedback on that request and the reviewer UI, through the same Ray Serve ingress
    feedback = {"request_id": reply.json()["results"][0]["request_id"], "agree": True}
    answer = httpx.post(
        f"{served['url']}/v1/feedback", json=feedback, headers=_headers(served, "doc"), timeout=60
    )
    assert answer.status_code == 201, answer.text
    assert "Your RadGate token" in httpx.get(f"{served['url']}/ui/login", timeout=30).text


def test_unapproved_and_tampered_versions_are_refused(served: dict[str, Any]) -> None:
    for name in ("pending-model", "tampered-model"):
        reply = httpx.post(
            f"{served['url']}/v1/models/{name}/predict",
            content=served["files"][0].read_bytes(),
            headers=_headers(served, content_type="application/dicom"),
            timeout=60,
        )
        assert reply.status_code == 403, (name, reply.text)
        assert "not approved" in reply.json()["detail"]


def test_series_to_pacs_and_back_through_dicomweb(served: dict[str, Any]) -> None:
    from dicomweb_client import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass
    from pydicom import dcmread

    from imaging.gateway.multipart import build_related

    orthanc = served["orthanc"]
    orthanc.clear()
    files = served["files"][1:3]
    body, content_type = build_related([p.read_bytes() for p in files])
    reply = httpx.post(
        f"{served['url']}/v1/models/{MODEL}/predict?push=true",
        content=body,
        headers=_headers(served, content_type=content_type),
        timeout=180,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["pushed"] == {"sent": 6, "failed": 0}  # SC + SR + saliency SEG per instance
    client = DICOMwebClient(
        url=orthanc.dicomweb_url, session=create_session_from_user_pass(orthanc.user, orthanc.password)
    )
    study = str(dcmread(files[0]).StudyInstanceUID)
    series = client.search_for_series(study_instance_uid=study)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["OT", "SR"] or set(modalities) >= {"SR"}
    sr_series = next(s for s in series if s["00080060"]["Value"][0] == "SR")
    sr_uid = sr_series["0020000E"]["Value"][0]
    (instance,) = client.search_for_instances(study_instance_uid=study, series_instance_uid=sr_uid)
    report = client.retrieve_instance(study, sr_uid, instance["00080018"]["Value"][0])
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR


def test_inference_ae_routes_a_study_and_results_come_back(served: dict[str, Any]) -> None:
    """The PACS routes a study to the inference AE (C-STORE); results land back in the PACS."""
    from pydicom import dcmread

    from serving.inference_ae import InferenceAE

    orthanc = served["orthanc"]
    orthanc.clear()
    port = free_port()
    node = InferenceAE(
        serve_url=served["url"],
        model=MODEL,
        token=served["cast"].tokens["pacs"],
        port=port,
        allowed_aes={orthanc.aet},
    ).start()
    try:
        orthanc.add_modality("radgate-ai", "RADGATE-AI", "127.0.0.1", port)
        source = served["files"][0]
        uploaded = orthanc.upload(source.read_bytes())
        orthanc.rest(
            "POST", "/modalities/radgate-ai/store", {"Resources": [uploaded["ID"]], "Synchronous": True}
        )
        node.drain()
    finally:
        node.stop()
    assert node.stats.received == 1 and node.stats.predicted == 1, node.stats
    study = str(dcmread(source).StudyInstanceUID)
    found = orthanc.rest(
        "POST", "/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": study}, "Expand": True}
    )
    modalities = sorted(series["MainDicomTags"].get("Modality", "") for series in found)
    assert {"SR", "SEG"} <= set(modalities) and len(modalities) == 4, modalities  # source + SC + SR + SEG


def test_revocation_stops_serving_within_seconds(served: dict[str, Any]) -> None:
    from governance.approvals import Workflow
    from governance.audit import AuditLog

    Workflow().revoke(served["cast"]["doc"], MODEL, served["version"], "withdrawn in test")
    deadline = time.monotonic() + 30
    status = 200
    while time.monotonic() < deadline:
        reply = httpx.post(
            f"{served['url']}/v1/models/{MODEL}/predict",
            content=served["files"][0].read_bytes(),
            headers=_headers(served, content_type="application/dicom"),
            timeout=60,
        )
        status = reply.status_code
        if status == 403:
            break
        time.sleep(0.5)
    assert status == 403
    actions = [e.action for e in AuditLog().entries(newest_first=True)][:200]
    assert "serve.predict.denied" in actions and "serve.predict" in actions


def test_a_crashed_ingress_replica_comes_back_on_the_same_port(served: dict[str, Any]) -> None:
    """Direct ingress: Ray Serve replaces a killed ingress replica and the new one listens on the
    configured port again (runs last: it restarts the replica the other tests used)."""
    import signal

    import psutil

    port = int(served["url"].rsplit(":", 1)[1])

    def listener() -> int | None:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                return conn.pid
        return None

    before = listener()
    assert before is not None
    os.kill(before, signal.SIGKILL)
    headers = {"Authorization": f"Bearer {served['cast'].tokens['pacs']}"}
    deadline = time.monotonic() + 120
    after = None
    while time.monotonic() < deadline:
        after = listener()
        if after not in (None, before):
            try:
                if httpx.get(f"{served['url']}/healthz", headers=headers, timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    else:
        pytest.fail("no ingress replica listens on the port again")
    assert after not in (None, before)
