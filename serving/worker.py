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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.config import Backend, ServedModel
from serving.methods import EXPLAIN_METHODS
from serving.model import ArtifactMismatch, GateDenied, InProcessForward, ServedPredictor, load_gated, softmax

if TYPE_CHECKING:
    from governance.approvals import Gate

__all__ = ["BatchForward", "ModelWorker", "Prepared"]

LOGGER = logging.getLogger(__name__)
#: ``await forward(one [C, H, W] array) -> (logits row, batch size it ran in, embedding row)``;
#: the penultimate embedding is there when live monitoring records this model, else ``None``.
BatchForward = Callable[[np.ndarray], Awaitable[tuple[np.ndarray, int, np.ndarray | None]]]
_MONITOR_BACKLOG = 1024  # requests waiting to be recorded before new ones are skipped
_MONITOR_FRAME = 32  # requests handed on together at most (one frame to the recorder process)
#: One served request for live monitoring: (request id, DICOM bytes, result, embedding or None).
Case = tuple[str, bytes, dict[str, Any], np.ndarray | None]
#: What :meth:`ModelWorker._decode_and_forward` returns: (the decoder's exception or None, when
#: preprocessing ended, the ``[C, H, W]`` tensor, the :data:`BatchForward` output or None).
Decoded = tuple[Exception | None, float, np.ndarray, tuple[np.ndarray, int, np.ndarray | None] | None]


@dataclass(frozen=True)
class Prepared:
    """A lone image decoded (and, when still alone, forwarded) by :meth:`ModelWorker.prepare`
    in the worker-thread call that parsed the request and asked the gate; :meth:`ModelWorker.predict`
    uses it when ``predictor`` is still the one it serves."""

    predictor: ServedPredictor
    started: float
    decoded: Decoded
    #: The forward pass's failure, raised by :meth:`ModelWorker.predict` where it would have raised.
    error: Exception | None = None


def _always() -> bool:
    return True


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


class MonitorHandoff:
    """Served requests on their way to live monitoring, off the request path.

    :meth:`submit` only queues (``backlog`` requests at most: serving never waits for
    monitoring); one background thread hands them to ``sink(predictor, recorder, cases)``. What
    queued while the previous hand-off ran goes on in one call (consecutive requests of the same
    predictor and recorder, ``frame`` at most), so under load the thread wakes, takes the GIL and
    writes to the recorder process once per group instead of once per request; a lone request is
    handed on at once (no timer). A request that finds the backlog full is not recorded: it is
    counted (:attr:`unrecorded`, images, and ``radgate_monitoring_unrecorded_total`` by model)
    and logged, never dropped silently; nothing that was queued is lost.
    """

    def __init__(
        self,
        sink: Callable[[ServedPredictor, Any, list[Case]], None],
        *,
        backlog: int = _MONITOR_BACKLOG,
        frame: int = _MONITOR_FRAME,
        lowest_priority: bool = False,
    ) -> None:
        self._sink = sink
        self._frame = frame
        self._lowest_priority = lowest_priority
        self._queue: queue.Queue[tuple[ServedPredictor, Any, list[Case]]] = queue.Queue(backlog)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._unfinished = 0  # requests queued or being handed on
        self._finished = threading.Condition()
        self.unrecorded = 0  # images not recorded because the backlog was full

    def submit(self, predictor: ServedPredictor, recorder: Any, cases: list[Case]) -> bool:
        """Queue one request's cases; False (counted, logged) when the backlog is full."""
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="live-monitoring", daemon=True)
                    self._thread.start()
        with self._finished:
            self._unfinished += 1
        try:
            self._queue.put_nowait((predictor, recorder, cases))
            return True
        except queue.Full:  # overload: serving goes on, the gap is counted and logged
            self._done(1)
            from serving import metrics

            self.unrecorded += len(cases)
            metrics.MONITORING_UNRECORDED.labels(model=predictor.loaded.name).inc(len(cases))
            LOGGER.warning("live monitoring backlog full: %d request(s) not recorded", len(cases))
            return False

    def pending(self) -> int:
        """Requests queued and not yet handed on (the one being handed on not included)."""
        return self._queue.qsize()

    def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every queued request has been handed on;
        whether it was (a replica shutting down, before it closes the recorder process)."""
        with self._finished:
            return self._finished.wait_for(lambda: self._unfinished == 0, timeout)

    def _done(self, requests: int) -> None:
        with self._finished:
            self._unfinished -= requests
            if self._unfinished == 0:
                self._finished.notify_all()

    def _run(self) -> None:
        if self._lowest_priority:
            # Recording on this thread is Python work: at the lowest priority it yields the CPUs.
            # A thread that only hands requests to a recorder process keeps the replica's
            # priority: a thread the kernel starves while it holds the GIL stalls every request
            # thread of the process until it runs again (priority inversion).
            with contextlib.suppress(OSError, AttributeError):  # Linux: per-thread nice value
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while True:
            items = [self._queue.get()]
            while len(items) < self._frame:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            start = 0
            for end in range(1, len(items) + 1):
                if end == len(items) or not (
                    items[end][0] is items[start][0] and items[end][1] is items[start][1]
                ):
                    predictor, recorder, _ = items[start]
                    cases = [case for item in items[start:end] for case in item[2]]
                    try:
                        self._sink(predictor, recorder, cases)
                    except Exception as exc:  # a monitoring failure is logged, not served
                        LOGGER.warning("live features not recorded (%s)", type(exc).__name__)
                    finally:
                        self._done(end - start)
                    start = end


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
        # ``record_out_of_process`` (the serve app): the recorder this worker built for a loaded
        # version records in a child process (serving.monitoring.process), off this process's
        # GIL; a recorder set from outside (tests) still records on the hand-off thread.
        self._recorder_process: Any = None
        if record_out_of_process:
            from serving.monitoring.process import RecorderProcess

            self._recorder_process = RecorderProcess()
        # Live monitoring is handed off to one background thread (bounded backlog), so that
        # recording request N does not slow request N+1; recording on that thread itself runs at
        # the lowest CPU priority.
        self.monitoring = MonitorHandoff(self._observe, lowest_priority=self._recorder_process is None)
        self._own_recorder: Any = None
        self._load(None)

    def close(self, timeout: float = 15.0) -> None:
        """Shutting down: hand on what live monitoring still holds, then close the recorder
        process, which records what it was sent before it exits (``timeout`` seconds for each)."""
        if not self.monitoring.drain(timeout):
            LOGGER.warning(
                "live monitoring: %d request(s) not handed on at shutdown", self.monitoring.pending()
            )
        if self._recorder_process is not None:
            self._recorder_process.close(timeout=timeout)

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

    def _observe(self, predictor: ServedPredictor, recorder: Any, cases: list[Case]) -> None:
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
                    self.served.triton_url,
                    pathlib.Path(self.served.triton_repository),
                    gate=self.gate,
                    tls=self.served.triton_tls,
                )
            return TritonForward(
                self.served.triton_url,
                self.served.triton_model_name or self.served.name,
                loaded.version,
                loaded.artifact_sha256,
                loader=loader,
                tls=self.served.triton_tls,
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

    def prepare(self, version: str, data: bytes, alone: Callable[[], bool]) -> Prepared | None:
        """For the caller's worker thread that has just parsed a one-image request and found it
        allowed for ``version``: decode ``data`` and, when it is still ``alone``, forward it at
        batch 1, so that the request crosses to a worker thread once instead of twice. None
        (nothing done; :meth:`predict` does it) when another version is loaded, or none, or the
        model segments (a series)."""
        predictor = self.predictor
        if predictor is None or predictor.version != str(version) or predictor.task != "classification":
            return None
        if getattr(predictor.forward, "name", "") != InProcessForward.name:
            # Measured only to help an in-process forward (p50 lower in 3 of 3 before/after pairs);
            # with Triton the served throughput fell in 3 of 3 (0.82 -> 0.77, 0.88 -> 0.79, 0.90
            # -> 0.82), not yet explained, so a remote forward keeps the two-call path.
            return None
        started = time.perf_counter()
        try:
            return Prepared(predictor, started, self._decode_and_forward(predictor, data, alone))
        except Exception as exc:  # the forward failed: predict raises it, as on its own path
            return Prepared(
                predictor, started, (None, time.perf_counter(), np.empty(0, np.float32), None), exc
            )

    def _decode_and_forward(
        self, predictor: ServedPredictor, data: bytes, alone: Callable[[], bool]
    ) -> Decoded:
        """Preprocess ``data`` and, when it is still ``alone``, forward it at batch 1, on the
        calling (worker) thread: (the decoder's exception or None, when preprocessing ended, the
        ``[C, H, W]`` float32 tensor, the :data:`BatchForward` output or None when not alone).
        A forward failure raises, as on the batched path."""
        try:
            tensor = predictor.preprocess(data).astype(np.float32, copy=False)
        except Exception as exc:  # any decoder failure (codec, MONAI, pydicom)
            return exc, time.perf_counter(), np.empty(0, np.float32), None
        preprocessed = time.perf_counter()
        if not alone():
            return None, preprocessed, tensor, None
        logits, embeddings = self.forward(tensor[None])
        return None, preprocessed, tensor, (logits[0], 1, None if embeddings is None else embeddings[0])

    async def forward_one(self, item: np.ndarray) -> tuple[np.ndarray, int, np.ndarray | None]:
        """A :data:`BatchForward` without batching: one ``[C, H, W]`` image, forward at batch 1."""
        logits, embeddings = await asyncio.to_thread(self.forward, item[None])
        return logits[0], 1, None if embeddings is None else embeddings[0]

    # ---- requests ----------------------------------------------------------------------------

    async def predict(
        self, payload: dict[str, Any], forward: BatchForward, *, alone: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """``payload``: ``instances`` (DICOM bytes), ``version`` (what the gate approved now),
        ``explain`` (method or None), ``dicom`` (bool), and for a model in the caller's process
        optionally ``prepared`` (:meth:`prepare`'s result for the one image, used when it came
        from the predictor still served). ``alone``: whether a single image is
        the only one in the replica now (asked once it is decoded): then it is forwarded at
        batch 1 in the thread that decoded it, else it goes to ``forward`` (which may batch
        it); ``forward`` :meth:`forward_one` itself never batches."""
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
        outputs: list[tuple[np.ndarray, int, np.ndarray | None]]
        prepared = payload.get("prepared")
        if len(instances) == 1 and (
            (isinstance(prepared, Prepared) and prepared.predictor is predictor)
            or alone is not None
            or forward == self.forward_one
        ):
            # A lone image: decode and forward in one worker-thread call (each hop between the
            # event loop and a worker thread is two thread wake-ups, a millisecond or more on a
            # loaded machine); when company came while it was decoded, it joins their batch.
            # A colocated model did it already in the ingress's own call (``prepared``).
            if isinstance(prepared, Prepared) and prepared.predictor is predictor:
                if prepared.error is not None:
                    raise prepared.error
                started, decoded = prepared.started, prepared.decoded
            else:
                decoded = await asyncio.to_thread(
                    self._decode_and_forward, predictor, instances[0], alone or _always
                )
            failure, preprocessed, tensor, output = decoded
            if failure is not None:  # the decoder's failure is the input's fault
                return _error(422, f"cannot decode the image for this model ({type(failure).__name__})")
            if output is None:
                output = await forward(tensor)
            outputs = [output]
        else:
            try:
                tensors = await asyncio.gather(
                    *(asyncio.to_thread(predictor.preprocess, d) for d in instances)
                )
            except Exception as exc:  # any decoder failure (codec, MONAI, pydicom) is the input's fault
                return _error(422, f"cannot decode the image for this model ({type(exc).__name__})")
            preprocessed = time.perf_counter()
            outputs = list(
                await asyncio.gather(*(forward(t.astype(np.float32, copy=False)) for t in tensors))
            )
        forwarded = time.perf_counter()
        results: list[dict[str, Any]] = []
        objects: list[list[bytes]] = []
        dicom_wanted = bool(payload.get("dicom"))
        for data, (logits, _, _) in zip(instances, outputs, strict=True):
            # Calibrated: temperature scaling fitted on validation, registered with the model.
            probabilities = softmax(logits[None, :] / getattr(predictor.loaded, "temperature", 1.0))[0]
            try:
                if explain is None and not dicom_wanted:
                    # JSON alone is a few dozen arithmetic operations: no thread hop for it
                    result, dicom = predictor.result(data, probabilities, explain=None, dicom=False)
                else:  # explanation maps, DICOM encoding: off the event loop
                    result, dicom = await asyncio.to_thread(
                        predictor.result, data, probabilities, explain=explain, dicom=dicom_wanted
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
            self.monitoring.submit(predictor, self.recorder, cases)
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
