"""The served in-process forward (a TorchScript trace returning logits and the monitoring
embedding) and live monitoring recorded in a child process: real registry, real model, real
DICOM, a real child process and catalog."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

MODEL = "forward-model"


@pytest.fixture
def served(radgate_home: Path) -> dict[str, Any]:
    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.testing import approve_and_promote, register_model
    from training.registry import load_model

    cast = create_cast()
    version = register_model(MODEL, spatial_size=(48, 48))
    approve_and_promote(MODEL, version, cast)
    files = write_demo_studies(radgate_home / "demo", patients=3, images_per_patient=1, size=64).files
    return {"version": version, "files": files, "loaded": load_model(f"{MODEL}/{version}")}


def test_traced_forward_equals_the_eager_module(served: dict[str, Any]) -> None:
    import torch

    from serving.model import InProcessForward
    from training.reference_profile import embed_and_score

    loaded = served["loaded"]
    forward = InProcessForward(loaded)
    assert isinstance(forward.traced, torch.jit.ScriptModule)
    images = torch.cat([loaded.preprocess(p.read_bytes()) for p in served["files"]])
    for batch in (images[:1], images):  # traced at batch 1, served at any batch size
        logits, embedding = forward.with_embedding(batch.numpy())
        with torch.inference_mode():
            eager = loaded.module(batch).numpy()
        _, expected = embed_and_score(loaded.module, batch)
        assert logits.shape == eager.shape == (len(batch), 2)
        assert np.allclose(logits, eager, atol=1e-5)
        assert embedding is not None
        assert np.allclose(embedding, expected, atol=1e-5)
        assert np.allclose(forward(batch.numpy()), eager, atol=1e-5)
    eager_forward = InProcessForward(loaded, torchscript=False)
    assert eager_forward.traced is None
    logits, embedding = eager_forward.with_embedding(images.numpy())
    assert np.allclose(logits, forward(images.numpy()), atol=1e-5)
    assert embedding is not None and embedding.shape == (len(images), expected.shape[1])


def test_gpu_model_without_cuda_serves_on_the_cpu(served: dict[str, Any], caplog: Any) -> None:
    """A replica configured with a GPU places the module on CUDA (scripts/device/cuda_check.py
    checks that on a GPU machine); where CUDA is absent it says so and serves on the CPU."""
    import types

    import torch

    from serving.config import ServedModel
    from serving.worker import ModelWorker

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/device/cuda_check.py covers the GPU path")
    worker = types.SimpleNamespace(served=ServedModel(name=MODEL, alias="production", num_gpus=1))
    with caplog.at_level("WARNING", logger="serving.worker"):
        forward = ModelWorker._forward_for(worker, served["loaded"])  # type: ignore[arg-type]
    assert "CUDA is not available" in caplog.text
    assert forward.device.type == "cpu"
    batch = served["loaded"].preprocess(served["files"][0].read_bytes()).numpy()
    assert forward(batch).shape == (1, 2)


def _log_reference_profile(served: dict[str, Any]) -> Any:
    """The version's reference profile, logged to its run: serving then records every request."""
    from training.preprocess import IMAGE_KEY
    from training.reference_profile import compute_reference_profile, log_reference_profile

    loaded = served["loaded"]
    rows = [{IMAGE_KEY: str(p)} for p in served["files"]]
    profile = compute_reference_profile(
        loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
    )
    log_reference_profile(str(loaded.run_id), profile)
    return profile


def test_monitoring_records_in_a_child_process(served: dict[str, Any]) -> None:
    from governance.catalog.db import open_catalog
    from serving.config import ServedModel
    from serving.monitoring.models import LiveRecord
    from serving.worker import ModelWorker
    from training.reference_profile import embed_and_score

    loaded = served["loaded"]
    profile = _log_reference_profile(served)
    worker = ModelWorker(ServedModel(name=MODEL), record_out_of_process=True)
    assert worker.recorder is not None, "the version has a reference profile"
    # loading the version warmed the child: it is running and has answered its warm-up frame
    child = worker._recorder_process._proc
    assert child is not None and child.poll() is None
    assert worker._recorder_process.warm(MODEL, served["version"], str(loaded.run_id), timeout=60)
    data = served["files"][1].read_bytes()
    try:
        # a fresh thread: an earlier test in the same session may leave an event loop marked
        # running in the main thread, where asyncio.run refuses to start
        with ThreadPoolExecutor(max_workers=1) as pool:
            reply = pool.submit(
                asyncio.run,
                worker.predict({"instances": [data], "version": served["version"]}, worker.forward_one),
            ).result()
        request_id = reply["results"][0]["request_id"]
        stored = None
        for _ in range(240):  # recorded off the request path, by the child
            with open_catalog().session() as session:
                stored = session.query(LiveRecord).filter_by(request_id=request_id).one_or_none()
                if stored is not None:
                    embedding = list(stored.embedding)
                    break
            time.sleep(0.25)
        assert stored is not None, "the child process recorded the request"
        process = worker._recorder_process._proc
        assert process is not None and process.poll() is None
    finally:
        worker._recorder_process.close()
    assert process.poll() is not None, "the child ends when its pipe closes"
    _, expected = embed_and_score(loaded.module, loaded.preprocess(data))
    assert np.allclose(embedding, profile.project(expected[0].astype(np.float64))[0], atol=1e-4)


def test_a_lone_image_is_forwarded_where_it_was_decoded_unless_company_came(served: dict[str, Any]) -> None:
    """ModelWorker.predict with ``alone``: a single image still alone once decoded is forwarded
    in the decoding thread (no batch forward called); one that found company goes to the batch
    forward. Both answer the same probabilities."""
    from serving.config import ServedModel
    from serving.worker import ModelWorker

    worker = ModelWorker(ServedModel(name=MODEL))
    batched: list[tuple[int, ...]] = []

    async def batch_forward(item: np.ndarray) -> tuple[np.ndarray, int, np.ndarray | None]:
        batched.append(item.shape)
        return await worker.forward_one(item)

    payload = {"instances": [served["files"][0].read_bytes()], "version": served["version"]}
    answers = []
    for alone in (True, False):
        answer = worker.predict(payload, batch_forward, alone=(lambda: True) if alone else (lambda: False))
        with ThreadPoolExecutor(max_workers=1) as pool:
            answers.append(pool.submit(asyncio.run, answer).result())
        assert len(batched) == (0 if alone else 1)
    assert batched[0][0] == 1 and len(batched[0]) == 3, "one [C, H, W] image went to the batch forward"
    first, second = (a["results"][0]["probabilities"] for a in answers)
    assert np.allclose(first, second, atol=1e-5)


def test_closing_a_worker_records_everything_it_answered(served: dict[str, Any]) -> None:
    """A replica shutting down (ModelWorker.close) hands on what live monitoring still holds and
    lets the recorder process finish: every answered request is recorded when close returns."""
    from sqlalchemy import select

    from governance.catalog.db import open_catalog
    from serving.config import ServedModel
    from serving.monitoring.models import LiveRecord
    from serving.worker import ModelWorker

    _log_reference_profile(served)
    worker = ModelWorker(ServedModel(name=MODEL), record_out_of_process=True)
    assert worker.recorder is not None

    async def answer_all() -> list[str]:
        payloads = [{"instances": [p.read_bytes()], "version": served["version"]} for p in served["files"]]
        replies = await asyncio.gather(*(worker.predict(p, worker.forward_one) for p in payloads * 4))
        return [r["results"][0]["request_id"] for r in replies]

    with ThreadPoolExecutor(max_workers=1) as pool:
        answered = pool.submit(asyncio.run, answer_all()).result()
    worker.close(timeout=60)
    assert worker.monitoring.unrecorded == 0
    with open_catalog().session() as session:
        recorded = select(LiveRecord.request_id).where(LiveRecord.request_id.in_(answered))
        stored = set(session.scalars(recorded))
    assert stored == set(answered), f"{len(answered) - len(stored)} answered request(s) not recorded"
