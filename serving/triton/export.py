"""``radgate triton export NAME@ALIAS --repo DIR``: a Triton model repository of an approved version.

Layout: ``DIR/<name>/config.pbtxt`` and ``DIR/<name>/<registry version>/`` holding
``model.pt`` (TorchScript) and, for the Python backend, ``model.py``; ``model.onnx`` for
``onnxruntime``. The Triton version number is the MLflow registry version, and the config
carries the artifact hash as a parameter, so serving can check that Triton runs exactly the
version the gate approved. Dynamic batching is on.
"""

from __future__ import annotations

import shutil
import site
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.config import ServedModel
from serving.model import ArtifactMismatch, GateDenied, load_gated
from serving.triton.client import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, SHA_PARAMETER

if TYPE_CHECKING:
    from governance.approvals import Gate

__all__ = ["ExportResult", "TritonBackendKind", "TritonExportError", "export_repository"]

_PYTHON_MODEL = Path(__file__).with_name("python_model.py")


class TritonExportError(RuntimeError):
    """The version may not, or cannot, be exported."""


class TritonBackendKind(StrEnum):
    """Which Triton backend runs the model (a setting of the export)."""

    PYTHON = "python"  # TorchScript inside the Python backend: CPU, runs with the pytriton binary
    PYTORCH = "pytorch"  # libtorch backend (NGC Triton image, GPU)
    ONNXRUNTIME = "onnxruntime"  # ONNX Runtime backend (NGC Triton image, GPU)


@dataclass(frozen=True)
class ExportResult:
    name: str
    version: str
    artifact_sha256: str
    model_dir: Path
    backend: TritonBackendKind


def _site_packages() -> str:
    paths = [p for p in site.getsitepackages() if Path(p).is_dir()]
    return ":".join(paths or [p for p in sys.path if p.endswith("site-packages")])


def _config(
    name: str,
    version: str,
    sha: str,
    backend: TritonBackendKind,
    shape: tuple[int, ...],
    classes: int,
    max_batch_size: int,
    threads: int,
    gpu: bool,
    embedding_dims: int = 0,
) -> str:
    if backend is TritonBackendKind.ONNXRUNTIME:
        head = 'platform: "onnxruntime_onnx"'
    else:
        head = f'backend: "{backend.value}"'
    params = {SHA_PARAMETER: sha, "radgate_model_version": version, "torch_threads": str(threads)}
    if backend is TritonBackendKind.PYTHON:
        params["python_path"] = _site_packages()
    lines = [
        f'name: "{name}"',
        head,
        f"max_batch_size: {max_batch_size}",
        f"version_policy: {{ specific: {{ versions: [{version}] }} }}",
        f'input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [{", ".join(map(str, shape))}] }} ]',
        f'output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [{classes}] }}'
        + (
            f', {{ name: "{EMBEDDING_NAME}" data_type: TYPE_FP32 dims: [{embedding_dims}] }}'
            if embedding_dims
            else ""
        )
        + " ]",
        # No delay: the batcher still joins the requests that queue while a batch runs, but a
        # lone request no longer waits for company (2 ms of every batch-1 request before);
        # concurrent requests reach Triton already batched by the replica (``@serve.batch``).
        "dynamic_batching { max_queue_delay_microseconds: 0 }",
        f"instance_group [ {{ kind: {'KIND_GPU' if gpu else 'KIND_CPU'} count: 1 }} ]",
    ]
    lines += [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]
    return "\n".join(lines) + "\n"


def _export_with_embedding(module: Any, spec: Any, path: Path) -> int:
    """TorchScript returning ``(logits, embedding)`` (or logits alone for a network without a
    last ``Linear``); returns the embedding's width (0 without one)."""
    import torch

    from serving.model import trace_with_embedding

    traced = trace_with_embedding(module, spec.spatial_size, channels=spec.channels)
    example = torch.zeros((1, spec.channels, *spec.spatial_size), dtype=torch.float32)
    with torch.inference_mode():
        _, embedding = traced(example)
    dims = int(embedding.shape[1])
    if dims == 0:
        from training.registration import export_torchscript

        export_torchscript(module, spec, path)
        return 0
    traced.save(str(path))
    return dims


def export_repository(
    ref: str,
    repo: Path,
    *,
    backend: TritonBackendKind = TritonBackendKind.PYTHON,
    max_batch_size: int = 32,
    threads: int = 1,
    gpu: bool = False,
    gate: Gate | None = None,
) -> ExportResult:
    """Export ``ref`` (``NAME@ALIAS`` or ``NAME/VERSION``) into ``repo`` if the gate allows it."""
    import torch

    from governance.approvals import Gate
    from training.registration import export_torchscript
    from training.registry import parse_model_ref

    name, alias, version = parse_model_ref(ref)
    served = (
        ServedModel(name=name, alias=alias, version=version)
        if alias
        else ServedModel(name=name, version=version)
    )
    try:
        loaded, _ = load_gated(served, gate or Gate())
    except GateDenied as exc:
        raise TritonExportError(str(exc)) from exc
    except ArtifactMismatch as exc:
        raise TritonExportError(str(exc)) from exc
    model_dir = Path(repo) / name
    version_dir = model_dir / loaded.version
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    spec = loaded.preprocessing
    shape = (spec.channels, *spec.spatial_size)
    # Re-trace from the verified module (the registered model.ts is also hashed, but tracing here
    # keeps the exported graph tied to what load_model verified). The Python and pytorch
    # backends get the logits and the penultimate embedding of the same forward pass (as the
    # in-process backend serves them), so live monitoring needs no forward pass of its own.
    embedding_dims = 0
    if backend is TritonBackendKind.ONNXRUNTIME:
        export_torchscript(loaded.module, spec, version_dir / "model.pt")
    else:
        embedding_dims = _export_with_embedding(loaded.module, spec, version_dir / "model.pt")
    if backend is TritonBackendKind.PYTHON:
        shutil.copyfile(_PYTHON_MODEL, version_dir / "model.py")
    elif backend is TritonBackendKind.ONNXRUNTIME:
        try:
            import onnx  # noqa: F401
        except ModuleNotFoundError as exc:
            raise TritonExportError("ONNX export needs the onnx package (pip install onnx)") from exc
        example = torch.zeros(1, *shape)
        torch.onnx.export(
            loaded.module,
            (example,),
            str(version_dir / "model.onnx"),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "n"}, OUTPUT_NAME: {0: "n"}},
            dynamo=False,
        )
        (version_dir / "model.pt").unlink()
    classes = len(loaded.label_names)
    (model_dir / "config.pbtxt").write_text(
        _config(
            name,
            loaded.version,
            loaded.artifact_sha256,
            backend,
            shape,
            classes,
            max_batch_size,
            threads,
            gpu,
            embedding_dims,
        )
    )
    return ExportResult(name, loaded.version, loaded.artifact_sha256, model_dir, backend)
