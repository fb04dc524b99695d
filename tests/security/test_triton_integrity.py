"""Attack: swap the weights in Triton's model repository after approval.

With the real ``tritonserver`` binary (explicit model control). The approved version is
published by the gate's publisher; then its ``model.pt`` is replaced by other weights. The
swapped model must never answer: not through RadGate's loader (which verifies the published
bytes at every load and before forward passes, and unloads on a mismatch), and not when Triton
is asked to reload the repository directly (the backend checks the weights' hash first).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

MODEL = "chest-swap"


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("triton-swap-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "45" * 32)
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def published(radgate_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from governance.testing import create_cast
    from serving.testing import approve_and_promote, register_model
    from serving.triton import TritonNotInstalled, TritonServer, find_tritonserver
    from serving.triton.publish import publish

    try:
        find_tritonserver()
    except TritonNotInstalled:
        pytest.skip("tritonserver not installed (scripts/ci/install-triton.sh)")
    cast = create_cast()
    version = register_model(MODEL)
    approve_and_promote(MODEL, version, cast)
    repo = tmp_path_factory.mktemp("triton-repo")
    publication = publish(f"{MODEL}@production", repo, actor="eng", role="ml-engineer", max_batch_size=4)
    server = TritonServer(repo, tmp_path_factory.mktemp("triton-work")).start()
    try:
        yield {"server": server, "version": version, "sha": publication.export.artifact_sha256, "repo": repo}
    finally:
        server.stop()


def _batch(tmp_path: Path) -> np.ndarray:
    from imaging.demo_data import write_demo_studies
    from training.registry import load_model

    loaded = load_model(f"{MODEL}/1")
    files = write_demo_studies(tmp_path, patients=2, images_per_patient=1, size=64, seed=3).files
    return np.concatenate([loaded.preprocess(p).numpy() for p in files])


def _swap_weights(path: Path) -> bytes:
    """Replace the TorchScript at ``path`` by the same graph with other weights; return the original."""
    import torch

    original = path.read_bytes()
    module = torch.jit.load(io.BytesIO(original), map_location="cpu")
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter))
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    path.chmod(0o644)
    path.write_bytes(buffer.getvalue())
    return original


def _answers(url: str, version: str, batch: np.ndarray) -> bool:
    """Whether Triton answers an inference for the model at all (no RadGate in the way)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    try:
        client.infer(MODEL, [tensor], model_version=version)
    except InferenceServerException:
        return False
    return True


def test_swapped_weights_never_answer(published: dict[str, Any], tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    from serving.triton import TritonForward, TritonModelMismatch
    from serving.triton.publish import TritonLoader

    url, version, sha = published["server"].grpc_url, published["version"], published["sha"]
    weights = published["repo"] / MODEL / version / "model.pt"
    batch = _batch(tmp_path)
    client = grpcclient.InferenceServerClient(url)
    assert not client.is_model_ready(MODEL, version)  # explicit control: nothing loaded by itself

    # the approved model, loaded by RadGate from verified bytes, answers
    loader = TritonLoader(url, published["repo"], verify_ttl_s=0)
    forward = TritonForward(url, MODEL, version, sha, loader=loader)
    approved = forward(batch)
    assert approved.shape == (2, 2)

    # 1. weights swapped while the model serves: the next forward pass refuses and unloads
    original = _swap_weights(weights)
    with pytest.raises(TritonModelMismatch, match="differs from what was published"):
        forward(batch)
    assert not client.is_model_ready(MODEL, version)
    assert not _answers(url, version, batch)

    # 2. a serving restart (a new load through RadGate) refuses the swapped repository
    with pytest.raises(TritonModelMismatch):
        TritonForward(url, MODEL, version, sha, loader=TritonLoader(url, published["repo"]))
    assert not _answers(url, version, batch)

    # 3. Triton asked directly to load the repository (bypassing RadGate): the backend refuses
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException):
        client.load_model(MODEL)
    assert not _answers(url, version, batch)

    # control: the published weights put back load and answer the approved outputs again
    weights.write_bytes(original)
    again = TritonForward(url, MODEL, version, sha, loader=TritonLoader(url, published["repo"]))
    np.testing.assert_allclose(again(batch), approved, rtol=1e-5, atol=1e-6)


def test_an_unpublished_or_unapproved_version_is_never_loaded(published: dict[str, Any]) -> None:
    from serving.triton import TritonModelMismatch
    from serving.triton.publish import TritonLoader

    loader = TritonLoader(published["server"].grpc_url, published["repo"])
    with pytest.raises(TritonModelMismatch, match="not allowed"):
        loader.load(MODEL, "99")


def test_a_settled_file_rewritten_between_full_reads_is_refused(
    published: dict[str, Any], tmp_path: Path
) -> None:
    """While serving, the re-check compares a settled published file's identity instead of
    reading its bytes: one byte of the weights rewritten in place (same size) changes that
    identity, and the next forward pass refuses and unloads."""
    import time

    from governance.approvals.digests import SETTLE_S
    from serving.triton import TritonForward, TritonModelMismatch
    from serving.triton.publish import TritonLoader

    url, version, sha = published["server"].grpc_url, published["version"], published["sha"]
    model_dir = published["repo"] / MODEL
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    newest = max(max(p.stat().st_mtime, p.stat().st_ctime) for p in files)
    time.sleep(max(0.0, newest + SETTLE_S + 0.2 - time.time()))  # every file settled
    batch = _batch(tmp_path)
    loader = TritonLoader(url, published["repo"], verify_ttl_s=0)
    forward = TritonForward(url, MODEL, version, sha, loader=loader)
    assert forward(batch).shape == (2, 2)
    weights = model_dir / version / "model.pt"
    assert weights in loader._hashed  # the re-checks now go by identity

    original = weights.read_bytes()
    other = bytearray(original)
    other[len(other) // 2] ^= 0xFF  # one byte of the weights, the file's size unchanged
    weights.write_bytes(bytes(other))
    try:
        with pytest.raises(TritonModelMismatch, match="differs from what was published"):
            forward(batch)
        assert not _answers(url, version, batch)
    finally:
        weights.write_bytes(original)
