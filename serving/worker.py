"""The body of a model deployment, independent of Ray: load behind the gate, reload when the
approved version changes, preprocess, forward (batched by the caller), build results.

Errors a client caused (an image that cannot be decoded, an unknown explanation method) come
back as ``{"error": {"status": 4xx, "message": ...}}`` rather than exceptions, so they cross
the Ray boundary intact and never become a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.config import Backend, ServedModel
from serving.methods import EXPLAIN_METHODS
from serving.model import ArtifactMismatch, GateDenied, InProcessForward, ServedPredictor, load_gated, softmax

if TYPE_CHECKING:
    from governance.approvals import Gate

__all__ = ["BatchForward", "ModelWorker"]

LOGGER = logging.getLogger(__name__)
#: ``await forward(one [C, H, W] array) -> (logits row, batch size it ran in, embedding row)``;
#: the penultimate embedding is there when live monitoring records this model, else ``None``.
BatchForward = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, int, np.ndarray | None]]]
_MONITOR_BACKLOG = 1024  # requests waiting to be recorded before new ones are skipped


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


class ModelWorker:
    """One replica's model. Starts without a model when the gate denies it (and says why)."""

    def __init__(
        self, served: ServedModel, gate: Gate | None = None, *, record_out_of_process: bool = False
    ) -> None:
        from governance.approvals import Gate

        self.served = served
        self.gate = gate or Gate()
        self.predictor: ServedPredictor | None = None
        self.recorder: Any = None  # serving.monitoring.LiveRecorder, when a reference profile exists
        self.denied: list[str] = []
        self._lock = threading.Lock()
        # Live monitoring runs on one background thread (recording there at the lowest CPU
        # priority, see _monitor_loop), so that recording request N does not slow request N+1.
        self._monitor_queue: queue.Queue[tuple[ServedPredictor, Any, list[Any]]] = queue.Queue(
            _MONITOR_BACKLOG
        )
        self._monitor: threading.Thread | None = None
        # ``record_out_of_process`` (the serve app): the recorder this worker built for a loaded
        # version records in a child process (serving.monitoring.process), off this process's
        # GIL; a recorder set from outside (tests) still records on the thread.
        self._recorder_process: Any = None
        if record_out_of_process:
            from serving.monitoring.process import RecorderProcess

            self._recorder_process = RecorderProcess()
        self._own_recorder: Any = None
        self._load(None)

    # ---- loading -----------------------------------------------------------------------------

    def _load(self, version: str | None) -> None:
        with self._lock:
            if self.predictor is not None and (version is None or self.predictor.version == version):
                return
            try:
                loaded, decision = load_gated(self.served, self.gate, version=version)
            except GateDenied as exc:
                self.predictor, self.denied = None, list(exc.decision.reasons)
                return
            except ArtifactMismatch as exc:
                self.predictor, self.denied = None, [str(exc)]
                return
            forward = self._forward_for(loaded)
            self.predictor = ServedPredictor(loaded, decision, forward)
            self.recorder = self._own_recorder = self._recorder_for(loaded)
            if self._recorder_process is not None and self.recorder is not None:
                # The child starts and loads this version's recorder now, not during the first
                # requests (its start-up would compete with their forward passes).
                ready = self._recorder_process.warm(loaded.name, str(loaded.version), str(loaded.run_id))
                if not ready:
                    LOGGER.warning("live monitoring not ready for %s v%s", loaded.name, loaded.version)
            self.denied = []
            LOGGER.info("serving %s v%s (%s)", loaded.name, loaded.version, forward.name)

    @staticmethod
    def _recorder_for(loaded: Any) -> Any:
        """Live monitoring against the version's reference profile; None without one."""
        try:
            from serving.monitoring.live import LiveRecorder

            return LiveRecorder.for_run(loaded.name, loaded.version, loaded.run_id)
        except Exception as exc:  # monitoring must never stop serving
            LOGGER.warning(
                "no live monitoring for %s v%s (%s)", loaded.name, loaded.version, type(exc).__name__
            )
            return None

    @staticmethod
    def _record_segmentation(predictor: ServedPredictor, answer: dict[str, Any]) -> None:
        """List a served segmentation in the reviewer's Cases (monitoring never stops serving)."""
        try:
            from serving.monitoring.live import record_segmentation

            for result in answer.get("results", []):
                record_segmentation(
                    result["request_id"],
                    model_name=predictor.loaded.name,
                    model_version=str(predictor.version),
                    structures=result.get("structures", []),
                    study_instance_uid=result.get("study_instance_uid") or None,
                    explanation=result.get("explanation"),
                )
        except Exception as exc:
            LOGGER.warning("segmentation result not recorded for review (%s)", type(exc).__name__)

    def _submit_observation(self, predictor: ServedPredictor, recorder: Any, cases: list[Any]) -> None:
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._monitor_loop, name="live-monitoring", daemon=True)
            self._monitor.start()
        try:
            self._monitor_queue.put_nowait((predictor, recorder, cases))
        except queue.Full:  # overload: serving goes on, the gap is logged (drift is statistical)
            LOGGER.warning("live monitoring backlog full: %d request(s) not recorded", len(cases))

    def _monitor_loop(self) -> None:
        if self._recorder_process is None:
            # Recording on this thread is Python work: at the lowest priority it yields the CPUs.
            # With a recorder process (the serve app) this thread only hands each request to the
            # child, itself at the lowest priority; the thread keeps the replica's priority,
            # since a thread the kernel starves while it holds the GIL stalls every request
            # thread of the process until it runs again (priority inversion).
            with contextlib.suppress(OSError, AttributeError):  # Linux: per-thread nice value
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            self._observe(*self._monitor_queue.get())

    def _observe(
        self,
        predictor: ServedPredictor,
        recorder: Any,
        cases: list[tuple[str, bytes, dict[str, Any], np.ndarray | None]],
    ) -> None:
        """Record each request's features (no PHI) and what the UI may show of it, off the
        request path."""
        from serving.monitoring.served import record_cases

        if self._recorder_process is not None and recorder is self._own_recorder:
            loaded = predictor.loaded
            try:
                self._recorder_process.submit(loaded.name, str(loaded.version), str(loaded.run_id), cases)
            except Exception as exc:  # a monitoring failure is logged, not served
                LOGGER.warning("live features not recorded (%s)", type(exc).__name__)
            return
        record_cases(recorder, cases, lambda: predictor.loaded)

    def _forward_for(self, loaded: Any) -> Any:
        import torch

        torch.set_num_threads(self.served.threads)
        if self.served.num_gpus > 0 and self.served.backend is not Backend.TRITON:
            # The replica holds a GPU: the module (forward, explanations, segmentation) runs there.
            if torch.cuda.is_available():
                loaded.module.to(torch.device("cuda"))
            else:
                LOGGER.warning("%s asks for a GPU but CUDA is not available: serving on CPU", loaded.name)
        if self.served.backend is Backend.TRITON:
            from serving.triton.client import TritonForward

            loader = None
            if self.served.triton_repository:
                import pathlib

                from serving.triton.publish import TritonLoader

                # The replica's own gate: the loader's re-checks share its cached decisions.
                loader = TritonLoader(
                    self.served.triton_url, pathlib.Path(self.served.triton_repository), gate=self.gate
                )
            return TritonForward(
                self.served.triton_url,
                self.served.triton_model_name or self.served.name,
                loaded.version,
                loaded.artifact_sha256,
                loader=loader,
            )
        return InProcessForward(loaded)

    def info(self) -> dict[str, Any]:
        base: dict[str, Any] = {"name": self.served.name, "reference": self.served.ref}
        if self.predictor is None:
            return {**base, "loaded": False, "denied": list(self.denied)}
        return {**base, "loaded": True, **self.predictor.info()}

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits, plus the penultimate embeddings when live monitoring records this model and
        the forward pass runs here (in-process): monitoring then needs no second forward."""
        assert self.predictor is not None
        forward = self.predictor.forward
        if self.recorder is not None and hasattr(forward, "with_embedding"):
            # in-process, or Triton with the embedding output: one forward pass gives both
            logits, embedding = forward.with_embedding(batch)
            return logits, embedding
        return forward(batch), None

    async def forward_one(self, item: np.ndarray) -> tuple[np.ndarray, int, np.ndarray | None]:
        """A :data:`BatchForward` without batching: one ``[C, H, W]`` image, forward at batch 1."""
        logits, embeddings = await asyncio.to_thread(self.forward, item[None])
        return logits[0], 1, None if embeddings is None else embeddings[0]

    # ---- requests ----------------------------------------------------------------------------

    async def predict(self, payload: dict[str, Any], forward: BatchForward) -> dict[str, Any]:
        """``payload``: ``instances`` (DICOM bytes), ``version`` (what the gate approved now),
        ``explain`` (method or None), ``dicom`` (bool)."""
        explain = payload.get("explain")
        if explain is not None and explain not in EXPLAIN_METHODS:
            return _error(
                422,
                f"unknown explanation method {str(explain)[:32]!r}; use one of "
                + ", ".join((*EXPLAIN_METHODS, "none")),
            )
        version = str(payload["version"])
        if self.predictor is None or self.predictor.version != version:
            await asyncio.to_thread(self._load, version)
        predictor = self.predictor
        if predictor is None or predictor.version != version:
            return _error(403, "model not approved for serving: " + "; ".join(self.denied or ["not loaded"]))
        if predictor.task == "segmentation":  # one series -> volume -> SEG + SR
            from serving.segmentation import predict_series

            answer = await asyncio.to_thread(predict_series, predictor, payload)
            if "error" not in answer:
                await asyncio.to_thread(self._record_segmentation, predictor, answer)
            return answer
        started = time.perf_counter()
        instances: list[bytes] = payload["instances"]
        try:
            tensors = await asyncio.gather(*(asyncio.to_thread(predictor.preprocess, d) for d in instances))
        except Exception as exc:  # any decoder failure (codec, MONAI, pydicom) is the input's fault
            return _error(422, f"cannot decode the image for this model ({type(exc).__name__})")
        preprocessed = time.perf_counter()
        outputs = await asyncio.gather(*(forward(t.astype(np.float32, copy=False)) for t in tensors))
        forwarded = time.perf_counter()
        results: list[dict[str, Any]] = []
        objects: list[list[bytes]] = []
        for data, (logits, _, _) in zip(instances, outputs, strict=True):
            # Calibrated: temperature scaling fitted on validation, registered with the model.
            probabilities = softmax(logits[None, :] / getattr(predictor.loaded, "temperature", 1.0))[0]
            try:
                result, dicom = await asyncio.to_thread(
                    predictor.result, data, probabilities, explain=explain, dicom=bool(payload.get("dicom"))
                )
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                return _error(422, f"cannot build results for this image ({type(exc).__name__})")
            # The id clinicians give back with their feedback (POST /v1/feedback).
            result["request_id"] = uuid.uuid4().hex
            results.append(result)
            objects.append(dicom)
        done = time.perf_counter()
        if self.recorder is not None:
            cases = [
                (r["request_id"], d, r, embedding)
                for r, d, (_, _, embedding) in zip(results, instances, outputs, strict=True)
            ]
            self._submit_observation(predictor, self.recorder, cases)
        return {
            "model": {
                "name": predictor.loaded.name,
                "version": predictor.version,
                "backend": predictor.forward.name,
            },
            "approval": predictor.approval(),
            "results": results,
            "objects": objects,
            "batch_sizes": [size for _, size, _ in outputs],
            "timings_ms": {
                "preprocess": round((preprocessed - started) * 1000, 2),
                "forward": round((forwarded - preprocessed) * 1000, 2),
                "results": round((done - forwarded) * 1000, 2),
            },
        }
