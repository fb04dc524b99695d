"""Fixtures of the web UI tests: an embedded MLflow SQLite registry, the cast of users, a case
folder, a TestClient, a live server for the browser, and Debian's Chromium for Playwright."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from governance.testing import Cast, copy_store, create_cast

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium instead of a downloaded browser (Playwright's download does not work
    offline; its --browser-channel option cannot select this binary)."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite store, copied into each test's RADGATE_HOME."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("ui-mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def registry(mlflow_template: Path, radgate_home: Path) -> Iterator[Any]:
    from governance.approvals import clear_gate_cache, registry_client

    copy_store(mlflow_template, radgate_home)
    clear_gate_cache()
    yield registry_client()
    clear_gate_cache()


@pytest.fixture()
def cast(registry: Any) -> Cast:
    return create_cast()


def write_case(home: Path, case_id: str = "demo", request_id: str | None = None) -> Path:
    """A case folder with a small image and map (what :func:`serving.ui.cases.demo_case` writes)."""
    folder = home / "ui" / "cases" / case_id
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:32, 0:32]
    np.save(folder / "image.npy", (x * 10.0 + y).astype(np.float32))
    np.save(folder / "gradcam.npy", np.exp(-((x - 20) ** 2 + (y - 12) ** 2) / 30.0).astype(np.float32))
    meta = {
        "title": f"Case {case_id}",
        "finding": "opacity",
        "probability": 0.7,
        "methods": ["gradcam"],
        "summary": "test case",
        "request_id": request_id,
    }
    (folder / "case.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture()
def case_dir(radgate_home: Path) -> Path:
    return write_case(radgate_home)


@pytest.fixture()
def ui_client(registry: Any, case_dir: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.ui import create_ui_app

    with TestClient(create_ui_app()) as client:
        yield client


@pytest.fixture(scope="session")
def demo_case_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real demo case (Captum on a synthetic radiograph), built once per session."""
    import os

    from governance.settings import get_settings
    from serving.ui.cases import demo_case

    home = tmp_path_factory.mktemp("ui-demo-home")
    old = os.environ.get("RADGATE_HOME")
    os.environ["RADGATE_HOME"] = str(home)
    get_settings.cache_clear()
    try:
        demo_case()
    finally:
        if old is None:
            os.environ.pop("RADGATE_HOME", None)
        else:
            os.environ["RADGATE_HOME"] = old
        get_settings.cache_clear()
    return home / "ui" / "cases" / "demo"


@pytest.fixture()
def live_ui(registry: Any, radgate_home: Path, demo_case_template: Path) -> Iterator[str]:
    """The standalone UI app on a free 127.0.0.1 port (uvicorn in a thread)."""
    import uvicorn

    from serving.ui import create_ui_app

    shutil.copytree(demo_case_template, radgate_home / "ui" / "cases" / "demo")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_ui_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the UI server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def record_served_request(
    request_id: str, model: str = "chest", view: dict[str, Any] | None = None, at: Any = None
) -> None:
    """A served prediction in the real monitoring store (what serving records per request)."""
    from serving.monitoring import LiveRecorder
    from training.reference_profile import live_feature_row, profile_from_rows

    labels = ["no_finding", "opacity"]
    rng = np.random.default_rng(0)
    rows = [
        live_feature_row(rng.random((8, 8)), {"manufacturer": "GE"}, [0.7, 0.3], labels) for _ in range(20)
    ]
    profile = profile_from_rows(rows, rng.normal(size=(20, 6)), labels, embedding_dims=3)
    recorder = LiveRecorder(model, "1", profile)
    image, attributes = rng.random((8, 8)), {"manufacturer": "GE"}
    recorder.record(request_id, image, attributes, [0.2, 0.8], rng.normal(size=6), view=view, at=at)


def serve_prediction(cast: Cast, folder: Path, model: str = "cxr-served") -> dict[str, Any]:
    """One prediction served for real: a small registered model approved by two people, the
    serving API (model worker in-process) with live monitoring, a request asking for Grad-CAM.
    Returns the result JSON once the monitoring store has recorded it (off the request path)."""

    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from governance.catalog import open_catalog
    from imaging.demo_data import write_demo_studies
    from serving.api import IngressService, api, install_service
    from serving.config import ServeConfig
    from serving.monitoring import LiveRecorder
    from serving.monitoring.models import LiveRecord
    from serving.testing import approve_and_promote, register_model
    from serving.worker import ModelWorker
    from training.preprocess import IMAGE_KEY
    from training.reference_profile import compute_reference_profile
    from training.registry import load_model

    version = register_model(model, spatial_size=(32, 32))
    approve_and_promote(model, version, cast)
    files = write_demo_studies(folder, patients=2, images_per_patient=1, size=32).files
    loaded = load_model(f"{model}/{version}")
    rows = [{IMAGE_KEY: str(p)} for p in files]
    profile = compute_reference_profile(
        loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
    )
    config = ServeConfig.model_validate({"models": [{"name": model}]})
    worker = ModelWorker(config.models[0])
    worker.recorder = LiveRecorder(model, version, profile)

    class _Local:
        async def info(self) -> dict[str, Any]:
            return worker.info()

        async def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
            return await worker.predict(payload, worker.forward_one)

    install_service(IngressService(config, {model: _Local()}))
    reply = TestClient(api).post(
        f"/v1/models/{model}/predict?explain=gradcam",
        content=files[0].read_bytes(),
        headers={"Authorization": f"Bearer {cast.tokens['pacs']}", "Content-Type": "application/dicom"},
    )
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()["results"][0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open_catalog().session() as session:
            query = select(LiveRecord.id).where(LiveRecord.request_id == result["request_id"])
            if session.execute(query).first():
                return result
        time.sleep(0.2)
    raise AssertionError("the served request was not recorded")
