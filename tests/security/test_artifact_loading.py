"""Attack: a pickle runs code. The model's hash was checked, then ``mlflow.pytorch.load_model``
unpickled the directory again (time of check != time of use, and unpickling executes). Now the
bytes loaded are a private copy of the bytes hashed, and a network RadGate can rebuild is read
from its TorchScript export's tensors: a planted pickle is never unpickled."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from governance.tags import Tag, artifact_sha256
from serving.testing import register_model
from training.registry import load_model


class _Payload:
    """Unpickling this creates ``marker`` (a stand-in for any code an attacker wants run)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_a_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from governance.settings import get_settings

    version = register_model("cxr-rebuilt", network="resnet10-lite")
    loaded = load_model(f"cxr-rebuilt/{version}")
    assert loaded.weights_format == "torchscript-state-dict"
    example = torch.rand(2, 1, 64, 64)
    script = torch.jit.load(str(loaded.torchscript_path))
    with torch.inference_mode():
        np.testing.assert_allclose(
            loaded.module(example).numpy(), script(example).numpy(), rtol=1e-5, atol=1e-6
        )

    # The attacker (write access to the MLflow store and registry) plants a pickle and re-tags.
    uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    location = client.get_model_version_download_uri("cxr-rebuilt", version)
    if RunsArtifactRepository.is_runs_uri(location):
        location = RunsArtifactRepository.get_underlying_uri(location, uri)
    store = Path(urlparse(location).path)
    pickled = next(store.rglob("model.pth"))
    marker = tmp_path / "marker"
    pickled.write_bytes(pickle.dumps(_Payload(str(marker))))
    client.set_model_version_tag("cxr-rebuilt", version, Tag.ARTIFACT_SHA256, artifact_sha256(store))
    again = load_model(f"cxr-rebuilt/{version}")
    assert not marker.exists(), "the planted pickle ran"
    assert again.weights_format == "torchscript-state-dict"
