"""The approval flow against a real MLflow tracking server process, with registry webhooks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from governance.approvals import Workflow, clear_gate_cache, gate, registry_client
from governance.approvals.webhooks import create_webhook_app, register_webhook
from governance.audit import AuditLog
from governance.settings import get_settings
from governance.testing import create_cast, create_version
from serving.net import free_port
from tests.processes import stop_process

pytestmark = pytest.mark.integration
NAME = "cxr-served"
SECRET = "test-webhook-secret-0123456789"


def _wait(predicate: object, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from cryptography.fernet import Fernet

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    log = (root / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    try:
        _wait(healthy, "mlflow server", 90)
        assert process.poll() is None, (root / "server.log").read_text()[-2000:]
        yield url, root / "artifacts"
    finally:
        stop_process(process, timeout=20)
        log.close()


@pytest.fixture()
def served(mlflow_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    monkeypatch.setenv("RADGATE_MLFLOW_TRACKING_URI", mlflow_server[0])
    get_settings.cache_clear()
    clear_gate_cache()
    yield mlflow_server
    clear_gate_cache()


@pytest.fixture()
def receiver() -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_webhook_app(SECRET, enforce=True), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, "webhook receiver", 30)
    yield f"http://127.0.0.1:{port}/mlflow/webhook"
    server.should_exit = True
    thread.join(timeout=10)


def test_flow_gate_and_webhook_against_a_tracking_server(served: tuple[str, Path], receiver: str) -> None:
    _, artifacts_root = served
    client = registry_client()
    assert client.tracking_uri.startswith("http://")
    # Registered first, as in a deployment (the server caches the webhook list per event).
    register_webhook(receiver, SECRET, client=client)
    cast = create_cast()
    version, relative = create_version(client, NAME, local_artifacts=False)
    workflow = Workflow(client)
    workflow.submit(cast["eng"], NAME, version)
    workflow.approve(cast["doc"], NAME, version, "ok")
    workflow.approve(cast["eng2"], NAME, version, "ok")
    workflow.promote(cast["eng"], NAME, version, "production")
    allowed = gate(NAME, "production", fresh=True)
    assert allowed.allowed, allowed.reasons

    # An alias set directly on the server (as in the MLflow UI) is reported and removed.
    rogue, _ = create_version(client, NAME, payload=b"never reviewed", local_artifacts=False)
    client.set_registered_model_alias(NAME, "staging", rogue)
    log = AuditLog()
    _wait(lambda: log.entries(action="model.alias_invalid"), "the webhook to report the alias")
    invalid = log.entries(action="model.alias_invalid")[0]
    assert invalid.target == f"model:{NAME}/{rogue}" and invalid.details["alias"] == "staging"
    _wait(lambda: "staging" not in client.get_registered_model(NAME).aliases, "the alias to be removed")
    assert not gate(NAME, "staging", fresh=True).allowed
    # RadGate's own promotion is not flagged.
    assert len(log.entries(action="model.alias_invalid")) == 1

    # The artifact swapped in the server's artifact store is caught by the gate.
    stored = artifacts_root / relative / "model.bin"
    original = stored.read_bytes()
    stored.write_bytes(b"swapped")
    denied = gate(NAME, "production", fresh=True)
    assert not denied.allowed and any(r.startswith("artifact unchanged") for r in denied.reasons)
    stored.write_bytes(original)
    assert gate(NAME, "production", fresh=True).allowed

    workflow.revoke(cast["doc"], NAME, version, "withdrawn")
    assert not gate(NAME, "production", fresh=True).allowed
    assert log.verify().ok


def test_webhook_receiver_refuses_unsigned_and_forged_deliveries() -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_webhook_app(SECRET))
    body = b'{"entity": "model_version_alias", "action": "created", "data": {}}'
    assert client.post("/mlflow/webhook", content=body).status_code == 401
    headers = {
        "X-MLflow-Delivery-Id": "d",
        "X-MLflow-Timestamp": str(int(time.time())),
        "X-MLflow-Signature": "v1,AAAA",
    }
    assert client.post("/mlflow/webhook", content=body, headers=headers).status_code == 401
    headers["X-MLflow-Timestamp"] = "1000"
    assert "too old" in client.post("/mlflow/webhook", content=body, headers=headers).text
