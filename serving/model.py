"""A served model behind the gate: load only what governance allows, then predict and explain.

:func:`load_gated` asks the gate (fresh: policy, approvals, alias provenance, artifact hash),
audits the decision, loads the version the gate named with :func:`training.registry.load_model`
(which re-hashes the downloaded artifact against the registration tag) and checks that hash
equals the one the gate saw. A version that is not approved is never loaded, even when pinned.

:class:`ServedPredictor` holds the loaded model and a forward backend (in-process torch or
Triton); :meth:`ServedPredictor.results` turns probabilities into the JSON result and,
when asked, the explanation and the DICOM result objects (SC overlay + SR).
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from governance.approvals.registry import model_target
from governance.audit import record
from governance.tags import Tag
from serving.methods import OVERLAY

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from governance.approvals import Gate, GateDecision
    from serving.config import ServedModel
    from training.registry import LoadedModel

__all__ = [
    "ArtifactMismatch",
    "Forward",
    "GateDenied",
    "InProcessForward",
    "ServedPredictor",
    "load_gated",
    "trace_with_embedding",
]

LOGGER = logging.getLogger(__name__)
SERVING_ACTOR = "radgate-serve"


class GateDenied(RuntimeError):
    """The gate refused the model (the reasons say why)."""

    def __init__(self, decision: GateDecision) -> None:
        self.decision = decision
        super().__init__(f"{decision.name}: not approved for serving: " + "; ".join(decision.reasons))


class ArtifactMismatch(RuntimeError):
    """The loaded artifact is not the one the gate approved."""


def load_gated(
    served: ServedModel, gate: Gate, *, version: str | None = None
) -> tuple[LoadedModel, GateDecision]:
    """Gate (fresh), audit, load, verify. ``version`` forces a version the alias now names."""
    from training.registry import ArtifactIntegrityError, ModelNotFoundError, load_model

    if version is not None and served.alias is not None:
        decision = gate(served.name, served.alias, fresh=True)
        if decision.allowed and decision.version != version:
            decision = gate(served.name, version=version, fresh=True)
    else:
        decision = gate(served.name, served.alias, version=served.version, fresh=True)
    target = model_target(served.name, decision.version or "?")
    details: dict[str, Any] = {"alias": served.alias, "backend": served.backend.value}
    if not decision.allowed:
        record(SERVING_ACTOR, "serve.load.denied", target, {**details, "reasons": decision.reasons[:5]})
        raise GateDenied(decision)
    try:
        loaded = load_model(f"{served.name}/{decision.version}", verify=True)
    except (ArtifactIntegrityError, ModelNotFoundError) as exc:
        record(SERVING_ACTOR, "serve.load.denied", target, {**details, "reasons": [type(exc).__name__]})
        raise ArtifactMismatch(str(exc)) from exc
    if loaded.artifact_sha256 != decision.artifact_sha256:
        record(SERVING_ACTOR, "serve.load.denied", target, {**details, "reasons": ["artifact hash changed"]})
        raise ArtifactMismatch(f"{target}: the artifact changed after the gate checked it")
    record(SERVING_ACTOR, "serve.load", target, {**details, "artifact_sha256": loaded.artifact_sha256})
    return loaded, decision


class Forward(Protocol):
    """A forward pass: float32 ``[N, C, H, W]`` -> logits ``[N, K]``."""

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class InProcessForward:
    """Torch in this process, through a TorchScript trace of the registered module.

    The trace returns the logits and the penultimate-layer embedding (the input of the last
    ``Linear``, what live monitoring projects) from one forward pass. A TorchScript forward runs
    in C++ without the GIL, so the serving process's other Python threads (HTTP handling,
    preprocessing, monitoring) no longer stall it between ops as they stall an eager forward.
    ``torchscript=False`` (or a module that cannot be traced): the eager module, embedding by a
    forward hook. The forward runs on the device that holds the module's parameters (a GPU
    replica moves the module there first, :meth:`serving.worker.ModelWorker`); inputs go to that
    device and results come back as CPU arrays.
    """

    name = "inprocess"

    def __init__(self, loaded: LoadedModel, *, torchscript: bool = True) -> None:
        import torch

        self.module = loaded.module
        parameter = next(iter(loaded.module.parameters()), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self._local = threading.local()
        self._hook_lock = threading.Lock()
        self._hooked: bool | None = None
        self.traced: Any = None
        if torchscript and loaded.task == "classification":
            spec = loaded.preprocessing
            try:
                self.traced = trace_with_embedding(
                    loaded.module, spec.spatial_size, channels=getattr(spec, "channels", 1)
                )
            except Exception as exc:  # e.g. a module trace cannot follow: the eager path serves it
                LOGGER.warning("serving the eager module: trace failed (%s)", type(exc).__name__)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.with_embedding(batch)[0] if self.traced is not None else self._eager(batch)

    def _eager(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(self._tensor(batch)).cpu().numpy()

    def _tensor(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(batch)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def with_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the penultimate-layer embedding from the same forward pass; ``None`` for a
        network without a last ``Linear``."""
        import torch

        if self.traced is not None:
            with torch.inference_mode():
                logits, embedding = self.traced(self._tensor(batch))
            return logits.cpu().numpy(), None if embedding.shape[1] == 0 else embedding.cpu().numpy()
        with self._hook_lock:
            if self._hooked is None:
                linears = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
                if linears:  # one hook for good; it keeps inputs only for a thread that asks
                    linears[-1].register_forward_hook(self._capture)
                self._hooked = bool(linears)
        self._local.embedding = None
        self._local.capturing = self._hooked
        try:
            logits = self._eager(batch)
        finally:
            self._local.capturing = False
        embedding = self._local.embedding
        return logits, None if embedding is None else embedding.cpu().numpy()

    def _capture(self, _module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
        if getattr(self._local, "capturing", False):
            self._local.embedding = inputs[0].detach().flatten(1)


def trace_with_embedding(module: Any, spatial_size: Any, *, channels: int = 1) -> Any:
    """TorchScript trace of ``module`` (eval mode, same weights) returning ``(logits, embedding)``:
    the embedding is the flattened input of the last ``Linear`` (``[N, 0]`` when there is none).
    Traced like the registered ``model.ts`` (``torch.jit.trace`` of the eager module), with the
    embedding as a second output, so live monitoring needs no second forward."""
    import torch

    class WithEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = module.eval()
            self.captured: list[torch.Tensor] = []

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.captured.clear()
            logits = self.network(x)
            if self.captured:
                return logits, self.captured[-1].flatten(1)
            return logits, logits.new_zeros((x.shape[0], 0))

    wrapper = WithEmbedding()
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    handle = (
        linears[-1].register_forward_hook(lambda _m, inputs, _o: wrapper.captured.append(inputs[0]))
        if linears
        else None
    )
    parameter = next(iter(module.parameters()), None)
    example = torch.zeros(
        (1, channels, *(int(s) for s in spatial_size)),
        dtype=torch.float32,
        device=parameter.device if parameter is not None else None,
    )
    try:
        with torch.inference_mode():
            traced = torch.jit.trace(wrapper, example, check_trace=False)
    finally:
        if handle is not None:
            handle.remove()
    with torch.inference_mode():
        for _ in range(2):  # the profiling executor specialises on its first runs
            traced(example)
    return traced


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class ServedPredictor:
    """A loaded, approved model with its forward backend."""

    loaded: LoadedModel
    decision: GateDecision
    forward: Forward

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation`` (the version's ``radgate.task`` tag)."""
        return self.loaded.tags.get(Tag.TASK, "classification")

    def info(self) -> dict[str, Any]:
        return {
            "name": self.loaded.name,
            "version": self.loaded.version,
            "task": self.task,
            "labels": list(self.loaded.label_names),
            "threshold": self.loaded.threshold,
            "backend": self.forward.name,
            "artifact_sha256": self.loaded.artifact_sha256,
            "approval": self.approval(),
        }

    def approval(self) -> dict[str, Any]:
        return {
            "status": self.loaded.tags.get(Tag.STATUS, "unknown"),
            "alias": self.decision.alias,
            "version": self.decision.version,
            "artifact_sha256": self.decision.artifact_sha256,
            "checked_at": self.decision.checked_at.isoformat(),
        }

    def preprocess(self, data: bytes) -> np.ndarray:
        """DICOM bytes -> ``[C, H, W]`` float32 as the model was trained on."""
        return self.loaded.preprocess(data)[0].numpy()

    def result(
        self, data: bytes, probabilities: np.ndarray, *, explain: str | None, dicom: bool
    ) -> tuple[dict[str, Any], list[bytes]]:
        """JSON result for one instance, plus the DICOM result objects when ``dicom``."""
        labels = list(self.loaded.label_names)
        positive = self.loaded.positive_index
        threshold = 0.5 if self.loaded.threshold is None else float(self.loaded.threshold)
        p_positive = float(probabilities[positive])
        out: dict[str, Any] = {
            "labels": labels,
            "probabilities": [round(float(p), 6) for p in probabilities],
            "predicted": labels[int(np.argmax(probabilities))],
            "finding": labels[positive],
            "probability": round(p_positive, 6),
            "decision": {
                "positive": p_positive >= threshold,
                "threshold": threshold,
                "label": labels[positive]
                if p_positive >= threshold
                else labels[1 - positive]
                if len(labels) == 2
                else labels[int(np.argmax(probabilities))],
            },
        }
        objects: list[bytes] = []
        if explain is None and not dicom:
            return out, objects
        source = _read(data)
        if explain is not None:
            case = self._explain(source, data, explain, p_positive, p_positive >= threshold)
            out["explanation"] = {
                "method": case.method.value,
                "summary": case.summary,
                "png_base64": base64.b64encode(case.png).decode("ascii"),
            }
            out["summary"] = case.summary
            if dicom:
                objects = [_encode(case.secondary_capture)]
                if case.structured_report is not None:
                    objects.append(_encode(case.structured_report))
                overlay = self._saliency_overlay(source, case)
                if overlay is not None:
                    objects.append(_encode(overlay))
        elif dicom:
            objects = [_encode(self._report(source, labels[positive], p_positive, p_positive >= threshold))]
        return out, objects

    def _explain(self, source: Dataset, data: bytes, method: str, probability: float, positive: bool) -> Any:
        from training.explain import ExplainConfig, explain_instance
        from training.explain.layers import overlay_method

        if method == OVERLAY:  # what this network family's reviewers see and its evidence checks
            method = overlay_method(self.loaded.module)
        config = ExplainConfig(target_layer=self.loaded.gradcam_layer or None)
        temperature = float(getattr(self.loaded, "temperature", 1.0))
        return explain_instance(
            self.loaded.module,
            source,
            self.loaded.preprocess(data),
            model_name=self.loaded.name,
            model_version=self.loaded.version,
            label_names=tuple(self.loaded.label_names),
            method=method,
            target=self.loaded.positive_index if len(self.loaded.label_names) == 2 else None,
            approval=self.loaded.tags.get(Tag.STATUS, "unknown"),
            sanity=self.loaded.tags.get(Tag.SALIENCY_SANITY),
            config=config,
            # The served (calibrated) probability and decision, not the explainer's raw softmax.
            probability=probability,
            positive=positive,
            calibration=f"temperature scaling, T={temperature:.4g}, fitted on validation"
            if temperature != 1.0
            else None,
            model_approval=self.model_approval(),
        )

    def model_approval(self) -> Any:
        """The registry's word on this version, as the DICOM results state it (IHE AIR)."""
        from imaging.results import ModelApproval

        return ModelApproval(
            model_version=str(self.version),
            artifact_sha256=str(self.decision.artifact_sha256 or "unknown"),
            status=str(self.loaded.tags.get(Tag.STATUS, "unknown")),
            alias=self.decision.alias,
        )

    def _report(self, source: Dataset, finding: str, probability: float, positive: bool) -> Dataset:
        from imaging.results import AlgorithmIdentity, build_result_report

        algorithm = AlgorithmIdentity(
            name=self.loaded.name, version=self.loaded.version, method="classification"
        )
        return build_result_report(
            source,
            algorithm,
            finding=finding,
            probability=probability,
            approval=self.model_approval(),
            positive=positive,
        )

    def _saliency_overlay(self, source: Dataset, case: Any) -> Dataset | None:
        """The explanation map as a fractional SEG over the source image (viewers overlay it);
        None for multi-frame sources, whose overlay is the Secondary Capture alone."""
        from imaging.results import (
            AlgorithmIdentity,
            SaliencySegmentationError,
            build_saliency_segmentation,
            resize_map,
        )

        if int(source.get("NumberOfFrames", 1) or 1) > 1:
            return None
        heat = resize_map(case.explanation.maps[0], (int(source.Rows), int(source.Columns)))
        algorithm = AlgorithmIdentity(
            name=self.loaded.name, version=self.loaded.version, method=case.method.display_name
        )
        try:
            return build_saliency_segmentation(
                source, heat, algorithm, finding=case.finding, approval=self.model_approval()
            )
        except SaliencySegmentationError as exc:
            LOGGER.warning("no saliency SEG for this source: %s", exc)
            return None


def _read(data: bytes) -> Dataset:
    from pydicom import dcmread

    return dcmread(BytesIO(data), force=True)


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
