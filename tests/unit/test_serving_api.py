"""The serving API without Ray: real MLflow registry, real workflow and gate, real DICOM; the
model worker is called in-process (Ray Serve is exercised in tests/integration/test_serving_ray.py).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

MODEL = "chest-opacity"


class LocalClient:
    """A ModelWorker called directly (batch of one)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    async def info(self) -> dict[str, Any]:
        return self.worker.info()

    async def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.worker.predict(payload, self.worker.forward_one)


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RADGATE_HOME for the module (overrides the per-test one of tests/conftest.py)."""
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("serving-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "22" * 32)
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def world(radgate_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.api import IngressService, api, install_service
    from serving.config import ServeConfig
    from serving.testing import approve_and_promote, register_model
    from serving.worker import ModelWorker

    cast = create_cast()
    version = register_model(MODEL)
    approve_and_promote(MODEL, version, cast)
    unapproved = register_model("pending-model", seed=1)
    config = ServeConfig.model_validate(
        {
            "max_body_bytes": 2 * 1024 * 1024,
            "gate_ttl_s": 0.5,
            "models": [{"name": MODEL}, {"name": "pending-model", "version": unapproved}],
        }
    )
    service = IngressService(config, {m.name: LocalClient(ModelWorker(m)) for m in config.models})
    install_service(service)
    files = write_demo_studies(
        tmp_path_factory.mktemp("demo"), patients=2, images_per_patient=1, size=64
    ).files
    return {"cast": cast, "version": version, "client": TestClient(api), "files": files, "service": service}


def _auth(world: dict[str, Any], who: str = "pacs") -> dict[str, str]:
    return {"Authorization": f"Bearer {world['cast'].tokens[who]}"}


def test_predict_json_with_explanation(world: dict[str, Any]) -> None:
    data = world["files"][0].read_bytes()
    reply = world["client"].post(
        f"/v1/models/{MODEL}/predict?explain=gradcam",
        content=data,
        headers={**_auth(world), "Content-Type": "application/dicom"},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"]["name"] == MODEL and body["model"]["version"] == world["version"]
    assert body["approval"]["alias"] == "production" and body["approval"]["artifact_sha256"]
    (result,) = body["results"]
    assert result["labels"] == ["no_finding", "opacity"]
    assert abs(sum(result["probabilities"]) - 1) < 1e-4
    assert result["decision"]["threshold"] == 0.5
    assert base64.b64decode(result["explanation"]["png_base64"])[:4] == b"\x89PNG"
    assert result["summary"].startswith("Finding: opacity")
    assert set(body["timings_ms"]) >= {"preprocess", "forward", "total"}


def test_predict_dicom_results_pass_dciodvfy(world: dict[str, Any], tmp_path: Path) -> None:
    from pydicom import dcmread

    from imaging.gateway.multipart import build_related, content_type_params, iter_parts

    source = dcmread(world["files"][1])
    body, content_type = build_related([p.read_bytes() for p in world["files"]])
    reply = world["client"].post(
        f"/v1/models/{MODEL}/predict?response=dicom",
        content=body,
        headers={**_auth(world, "doc"), "Content-Type": content_type},
    )
    assert reply.status_code == 200, reply.text
    media, params = content_type_params(reply.headers["content-type"])
    assert media == "multipart/related"
    parts = list(iter_parts(reply.content, params["boundary"]))
    assert len(parts) == 6  # SC + SR + saliency SEG for each of the two instances
    kinds = set()
    for index, part in enumerate(parts):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(part.body)
        ds = dcmread(path)
        kinds.add(ds.Modality)
        assert ds.StudyInstanceUID in {dcmread(f).StudyInstanceUID for f in world["files"]}
        if shutil.which("dciodvfy"):
            done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and "Error" not in done.stdout + done.stderr, done.stderr[-2000:]
    assert {"SR", "SEG"} <= kinds
    assert source.SOPInstanceUID  # the SR references the source instance (checked by dciodvfy's IOD)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/dicom", b"not a dicom file at all", 400),
        ("application/dicom", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00", 400),
        ("text/plain", b"hello", 415),
        ('multipart/related; type="application/dicom"; boundary=abc', b"--abc\r\nno end", 400),
        ('multipart/related; type="application/json"; boundary=abc', b"--abc--", 415),
        ("application/dicom", b"", 400),
    ],
)
def test_bad_input_is_a_clear_4xx(world: dict[str, Any], content_type: str, body: bytes, status: int) -> None:
    reply = world["client"].post(
        f"/v1/models/{MODEL}/predict", content=body, headers={**_auth(world), "Content-Type": content_type}
    )
    assert reply.status_code == status, reply.text
    assert reply.json()["detail"]


def test_oversized_body_is_413(world: dict[str, Any]) -> None:
    reply = world["client"].post(
        f"/v1/models/{MODEL}/predict",
        content=b"\0" * (3 * 1024 * 1024),
        headers={**_auth(world), "Content-Type": "application/dicom"},
    )
    assert reply.status_code == 413 and "exceeds" in reply.json()["detail"]


def test_tokens_and_roles(world: dict[str, Any]) -> None:
    client = world["client"]
    data = world["files"][0].read_bytes()
    url = f"/v1/models/{MODEL}/predict"
    assert client.post(url, content=data, headers={"Content-Type": "application/dicom"}).status_code == 401
    wrong = {"Authorization": "Bearer rg_not-a-token", "Content-Type": "application/dicom"}
    assert client.post(url, content=data, headers=wrong).status_code == 401
    steward = {**_auth(world, "steward"), "Content-Type": "application/dicom"}
    assert client.post(url, content=data, headers=steward).status_code == 403
    for route in ("/v1/models", "/healthz", "/metrics", "/openapi.json"):
        assert client.get(route).status_code == 401, route
    assert client.get("/metrics", headers=_auth(world, "pacs")).status_code == 403
    assert client.get("/metrics", headers=_auth(world, "auditor")).status_code == 200
    assert client.get("/openapi.json", headers=_auth(world)).json()["paths"]


def test_models_listing_and_unapproved_model_refused(world: dict[str, Any]) -> None:
    from governance.audit import AuditLog

    listing = world["client"].get("/v1/models", headers=_auth(world)).json()["models"]
    by_name = {m["name"]: m for m in listing}
    assert by_name[MODEL]["loaded"] and by_name[MODEL]["gate"]["allowed"]
    assert not by_name["pending-model"]["loaded"] and by_name["pending-model"]["denied"]
    reply = world["client"].post(
        "/v1/models/pending-model/predict",
        content=world["files"][0].read_bytes(),
        headers={**_auth(world), "Content-Type": "application/dicom"},
    )
    assert reply.status_code == 403 and "not approved" in reply.json()["detail"]
    actions = [e.action for e in AuditLog().entries(newest_first=True)][:50]
    assert "serve.predict.denied" in actions and "serve.predict" in actions
    assert "serve.auth.denied" in actions


def test_metrics_count_requests_and_denials(world: dict[str, Any]) -> None:
    text = world["client"].get("/metrics", headers=_auth(world, "eng")).text
    assert 'radgate_serve_requests_total{model="chest-opacity",status="200"}' in text
    assert "radgate_serve_denials_total" in text and "radgate_serve_batch_size_bucket" in text
    assert "radgate_serve_predictions_total" in text


def test_openapi_fuzz_never_5xx(world: dict[str, Any]) -> None:
    """schemathesis over the published schema (with a valid token): never a 5xx."""
    import schemathesis
    from hypothesis import given

    from serving.api import api

    @schemathesis.serializer("application/dicom", 'multipart/related; type="application/dicom"')
    def _binary(ctx: Any, value: Any) -> bytes:  # arbitrary bytes: the endpoint must refuse them cleanly
        return value if isinstance(value, bytes) else str(value).encode()

    schema = schemathesis.openapi.from_asgi("/openapi.json", api, headers=_auth(world))
    operations = [cast(Any, result).ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/models", "/v1/models/{name}/predict", "/healthz"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call(headers=_auth(world))
            assert response.status_code < 500, (case.path, response.status_code, response.text[:200])

        check()


def test_served_requests_feed_live_monitoring_and_feedback(world: dict[str, Any]) -> None:
    """Serving records each request's features against the reference profile (no PHI), and the
    request id it returns is what a clinician's feedback refers to."""
    import time

    from serving.monitoring.live import LiveRecorder
    from training.preprocess import IMAGE_KEY
    from training.reference_profile import compute_reference_profile
    from training.registry import load_model

    loaded = load_model(f"{MODEL}/{world['version']}")
    rows = [{IMAGE_KEY: str(p)} for p in world["files"]]
    profile = compute_reference_profile(
        loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
    )
    worker = world["service"].models[MODEL].worker
    worker.recorder = LiveRecorder(MODEL, world["version"], profile)
    try:
        reply = world["client"].post(
            f"/v1/models/{MODEL}/predict",
            content=world["files"][0].read_bytes(),
            headers={**_auth(world), "Content-Type": "application/dicom"},
        )
        assert reply.status_code == 200, reply.text
        request_id = reply.json()["results"][0]["request_id"]
        feedback = {"request_id": request_id, "agree": False, "corrected_label": "opacity"}
        for _ in range(120):  # the features are recorded off the request path
            answer = world["client"].post("/v1/feedback", json=feedback, headers=_auth(world, "doc"))
            if answer.status_code != 404:
                break
            time.sleep(0.5)
        assert answer.status_code == 201, answer.text
        # The embedding came from the served forward pass itself: the same as a separate one.
        from governance.catalog.db import open_catalog
        from serving.monitoring.models import LiveRecord
        from training.reference_profile import embed_and_score

        with open_catalog().session() as session:
            stored = session.query(LiveRecord).filter_by(request_id=request_id).one()
        _, embedding = embed_and_score(loaded.module, loaded.preprocess(world["files"][0].read_bytes()))
        expected = profile.project(embedding[0].astype(np.float64))[0]
        assert np.allclose(stored.embedding, expected, atol=1e-4)
    finally:
        worker.recorder = None
