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


def test_monitoring_records_in_a_child_process(served: dict[str, Any]) -> None:
    from governance.catalog.db import open_catalog
    from serving.config import ServedModel
    from serving.monitoring.models import LiveRecord
    from serving.worker import ModelWorker
    from training.preprocess import IMAGE_KEY
    from training.reference_profile import compute_reference_profile, embed_and_score, log_reference_profile

    loaded = served["loaded"]
    rows = [{IMAGE_KEY: str(p)} for p in served["files"]]
    profile = compute_reference_profile(
        loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
    )
    log_reference_profile(str(loaded.run_id), profile)
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
