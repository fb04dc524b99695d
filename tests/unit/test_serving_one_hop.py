"""A lone image to a model that runs in the ingress process (colocated) crosses to a worker
thread once: the call that parses the body and asks the gate also decodes and forwards it
(``BatchedModel.prepare_one``), and only once the gate allowed it. Same answer, same audit, as
the two-call path; a denied model never decodes; a prepared image of another version is not
used. Real registry, workflow, gate and DICOM; no Ray (the app's model class called in-process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.event_loops import run_on_own_loop

MODEL = "one-hop-model"
PENDING = "one-hop-pending"


@pytest.fixture
def world(radgate_home: Path) -> Iterator[dict[str, Any]]:
    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.api import IngressService, api, install_service
    from serving.app import BatchedModel
    from serving.config import ServeConfig
    from serving.testing import approve_and_promote, register_model

    cast = create_cast()
    version = register_model(MODEL)
    approve_and_promote(MODEL, version, cast)
    pending = register_model(PENDING, seed=1)
    config = ServeConfig.model_validate(
        {"gate_ttl_s": 5, "models": [{"name": MODEL}, {"name": PENDING, "version": pending}]}
    )
    models = {m.name: BatchedModel(m.model_dump_json(), config.gate_ttl_s) for m in config.models}
    import serving.api

    installed = serving.api._service  # another module's service, put back afterwards
    install_service(IngressService(config, dict(models)))
    files = write_demo_studies(radgate_home / "demo", patients=2, images_per_patient=1, size=64).files
    try:
        yield {"cast": cast, "version": version, "client": TestClient(api), "files": files, "models": models}
    finally:
        install_service(installed)  # type: ignore[arg-type]
        for model in models.values():
            model.close()


def _post(world: dict[str, Any], name: str, data: bytes) -> Any:
    return world["client"].post(
        f"/v1/models/{name}/predict",
        content=data,
        headers={
            "Authorization": f"Bearer {world['cast'].tokens['pacs']}",
            "Content-Type": "application/dicom",
        },
    )


def _count_thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return calls


def test_a_lone_image_crosses_to_a_worker_thread_once(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.audit import AuditLog

    data = world["files"][0].read_bytes()
    assert _post(world, MODEL, data).status_code == 200  # warm: the gate's decision is cached
    calls = _count_thread_calls(monkeypatch)
    reply = _post(world, MODEL, data)
    assert reply.status_code == 200, reply.text
    assert calls == ["_parse_and_gate"]  # parse, gate, decode and forward: one worker-thread call
    body = reply.json()
    assert body["model"]["version"] == world["version"]
    assert body["timings_ms"]["forward"] > 0 and body["timings_ms"]["preprocess"] > 0
    assert body["timings_ms"]["audit"] >= 0  # the commit awaited before the answer, timed apart
    # Audited (committed before the answer) with the input's digest, as on every path.
    (entry,) = AuditLog().entries(actions=["serve.predict"], newest_first=True, limit=1)
    import hashlib

    assert entry.details["inputs_sha256"] == [hashlib.sha256(data).hexdigest()]
    # The same answer as the worker's own path (decoded and forwarded in a call of its own).
    worker = world["models"][MODEL].worker
    own = run_on_own_loop(
        worker.predict(
            {"instances": [data], "version": world["version"], "explain": None, "dicom": False},
            worker.forward_one,
        )
    )
    served = body["results"][0]
    np.testing.assert_allclose(served["probabilities"], own["results"][0]["probabilities"], rtol=1e-5)
    assert served["decision"] == own["results"][0]["decision"]


def test_a_denied_model_never_decodes(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.worker import ModelWorker

    prepared: list[str] = []
    real = ModelWorker.prepare

    def spy(self: ModelWorker, version: str, data: bytes, alone: Any) -> Any:
        prepared.append(version)
        return real(self, version, data, alone)

    monkeypatch.setattr(ModelWorker, "prepare", spy)
    reply = _post(world, PENDING, world["files"][0].read_bytes())
    assert reply.status_code == 403
    assert prepared == []
    assert _post(world, MODEL, world["files"][0].read_bytes()).status_code == 200
    assert prepared == [world["version"]]
    # A prepared image of a version the worker no longer serves is not used: predict decides.
    worker = world["models"][MODEL].worker
    assert real(worker, "999", world["files"][0].read_bytes(), lambda: True) is None
    # Only an in-process forward is prepared; a remote one (Triton) keeps the two-call path.
    monkeypatch.setattr(worker.predictor.forward, "name", "triton")
    assert real(worker, world["version"], world["files"][0].read_bytes(), lambda: True) is None


def test_a_prepared_forward_failure_raises_in_predict(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = world["models"][MODEL].worker
    data = world["files"][0].read_bytes()

    def broken(batch: np.ndarray) -> Any:
        raise RuntimeError("forward failed")

    monkeypatch.setattr(worker, "forward", broken)
    prepared = worker.prepare(world["version"], data, lambda: True)
    assert prepared is not None and isinstance(prepared.error, RuntimeError)
    payload = {
        "instances": [data],
        "version": world["version"],
        "explain": None,
        "dicom": False,
        "prepared": prepared,
    }
    with pytest.raises(RuntimeError, match="forward failed"):  # where the two-call path raises it
        run_on_own_loop(worker.predict(payload, worker.forward_one))
