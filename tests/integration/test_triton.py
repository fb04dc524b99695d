"""Triton: export an approved model (the exporter refuses an unapproved one), serve the
repository with the real ``tritonserver`` binary from the nvidia-pytriton wheel (Python backend,
CPU), and check its outputs equal in-process outputs; the client refuses a version or artifact
the gate did not approve.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

MODEL = "chest-opacity"


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("triton-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "44" * 32)
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def triton(radgate_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from governance.testing import create_cast
    from serving.testing import approve_and_promote, register_model
    from serving.triton import TritonNotInstalled, TritonServer, export_repository, find_tritonserver

    try:
        find_tritonserver()
    except TritonNotInstalled:
        pytest.skip("tritonserver not installed (scripts/ci/install-triton.sh)")
    cast = create_cast()
    version = register_model(MODEL)
    pending = register_model("pending-model", seed=1)
    repo = tmp_path_factory.mktemp("triton-repo")
    from serving.triton import TritonExportError

    with pytest.raises(TritonExportError, match="not approved"):
        export_repository(f"pending-model/{pending}", repo)
    approve_and_promote(MODEL, version, cast)
    from serving.triton.publish import TritonLoader, publish

    result = publish(f"{MODEL}@production", repo, actor="eng", role="ml-engineer", max_batch_size=8).export
    assert (result.model_dir / version / "model.pt").is_file()
    assert f'string_value: "{result.artifact_sha256}"' in (result.model_dir / "config.pbtxt").read_text()
    server = TritonServer(repo, tmp_path_factory.mktemp("triton-work")).start()
    TritonLoader(server.grpc_url, repo).load(MODEL, version)  # explicit model control
    try:
        yield {"server": server, "version": version, "sha": result.artifact_sha256}
    finally:
        server.stop()


def test_triton_outputs_equal_in_process(triton: dict[str, Any], tmp_path: Path) -> None:
    from imaging.demo_data import write_demo_studies
    from serving.triton import TritonForward
    from training.registry import load_model

    loaded = load_model(f"{MODEL}/{triton['version']}")
    files = write_demo_studies(tmp_path, patients=3, images_per_patient=1, size=64, seed=9).files
    batch = np.concatenate([loaded.preprocess(p).numpy() for p in files])
    forward = TritonForward(triton["server"].grpc_url, MODEL, triton["version"], triton["sha"])
    remote = forward(batch)
    import torch

    with torch.inference_mode():
        local = loaded.module(torch.from_numpy(batch)).numpy()
    assert remote.shape == local.shape == (3, 2)
    np.testing.assert_allclose(remote, local, rtol=1e-4, atol=1e-5)
    # the monitoring embedding comes from the same Triton forward pass, equal to in-process
    from serving.model import InProcessForward

    assert forward.has_embedding
    logits, embedding = forward.with_embedding(batch)
    local_logits, local_embedding = InProcessForward(loaded).with_embedding(batch)
    assert embedding is not None and local_embedding is not None
    assert embedding.shape == local_embedding.shape
    np.testing.assert_allclose(logits, local_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embedding, local_embedding, rtol=1e-4, atol=1e-5)


def test_triton_client_refuses_other_versions_or_artifacts(triton: dict[str, Any]) -> None:
    from serving.triton import TritonForward, TritonModelMismatch

    url = triton["server"].grpc_url
    with pytest.raises(TritonModelMismatch):
        TritonForward(url, MODEL, "99", triton["sha"])
    with pytest.raises(TritonModelMismatch, match="another artifact"):
        TritonForward(url, MODEL, triton["version"], "0" * 64)
