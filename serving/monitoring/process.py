"""Live monitoring recorded in a process of its own, off the serving process's GIL.

Recording a served request (decode the header and pixels, feature row, projection, sealing,
the catalog write) is Python work; in the serving process it held the GIL that the model's
forward pass and the request handling need. :class:`RecorderProcess` starts
``python -m serving.monitoring.process`` (lowest CPU priority) and sends it each request as one
pickled frame on its stdin: model name, version, training run, and per request the id, the
DICOM bytes, serving's result and the penultimate embedding. The child builds one
:class:`~serving.monitoring.live.LiveRecorder` per version (``LiveRecorder.for_run``) and records
exactly what the in-process path records (:func:`~serving.monitoring.served.record_served`; for a
request without an embedding, e.g. Triton, :func:`~serving.monitoring.served.observe_dicom`
with the version loaded, verified, in the child). The child exits when its stdin closes (the
serving process ended).

The frames are pickles between a process and the child it started, on a private pipe.
:meth:`RecorderProcess.warm` (called when a version is loaded) starts the child and has it load
that version's recorder before the first request, and waits for it: the child's start-up
(imports, the reference profile from MLflow: about 1.5 s of CPU) no longer competes with the
first requests' forward passes on a small machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

__all__ = ["RecorderProcess", "main"]

LOGGER = logging.getLogger(__name__)
_HEADER = struct.Struct("!Q")
_READY = b"\x01"  # the child's answer to a warm-up frame (``cases`` None)
_FAILED = b"\x00"  # ... when that version's recorder could not be loaded


class RecorderProcess:
    """The parent side: :meth:`submit` writes one frame (blocking while the pipe is full)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        return subprocess.Popen(
            [sys.executable, "-m", "serving.monitoring.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # one byte per warm-up frame, nothing else
            cwd=root,
            env=env,
        )

    def warm(self, model: str, version: str, run_id: str, *, timeout: float = 120.0) -> bool:
        """Start the child and have it load ``model`` v``version``'s recorder now; wait (at most
        ``timeout`` seconds) until it has. False when it did not answer in time."""
        self.submit(model, version, run_id, None)
        with self._lock:
            proc = self._proc
            if proc is None or proc.stdout is None:
                return False
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            return bool(ready) and proc.stdout.read(1) == _READY

    def submit(self, model: str, version: str, run_id: str, cases: list[Any] | None) -> None:
        """Send one frame; ``cases`` None is a warm-up (see :meth:`warm`)."""
        payload = pickle.dumps((model, version, run_id, cases), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            for attempt in (0, 1):  # a child that died is started again, once per frame
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = self._start()
                assert self._proc.stdin is not None
                try:
                    self._proc.stdin.write(_HEADER.pack(len(payload)) + payload)
                    self._proc.stdin.flush()
                    return
                except (BrokenPipeError, OSError) as exc:
                    if attempt:
                        raise
                    LOGGER.warning("monitoring recorder process restarted (%s)", type(exc).__name__)
                    with contextlib.suppress(OSError):
                        self._proc.kill()
                    self._proc = None

    def close(self, timeout: float = 30.0) -> None:
        """Close the pipe: the child records every frame it was sent, then exits (waited for at
        most ``timeout`` seconds, then killed)."""
        with self._lock:
            if self._proc is not None:
                with contextlib.suppress(OSError):
                    assert self._proc.stdin is not None
                    self._proc.stdin.close()
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                self._proc = None


def _frames(stream: IO[bytes]) -> Any:
    while True:
        header = stream.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        body = stream.read(_HEADER.unpack(header)[0])
        yield pickle.loads(body)


def _answer(byte: bytes) -> None:
    sys.stdout.buffer.write(byte)
    sys.stdout.buffer.flush()


def main() -> None:
    """The child: record every frame read from stdin until it closes."""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(OSError):
        os.nice(19)
    import torch

    from serving.approved import load_approved
    from serving.monitoring.live import LiveRecorder
    from serving.monitoring.served import record_cases

    torch.set_num_threads(1)
    recorders: dict[tuple[str, str], LiveRecorder] = {}
    models: dict[tuple[str, str], Any] = {}
    for model, version, run_id, cases in _frames(sys.stdin.buffer):
        key = (model, version)
        try:
            if key not in recorders:
                recorders[key] = LiveRecorder.for_run(model, version, run_id)
            recorder = recorders[key]
        except Exception as exc:  # monitoring must never stop serving
            LOGGER.warning("no live monitoring for %s v%s (%s)", model, version, type(exc).__name__)
            if cases is None:
                _answer(_FAILED)
            continue

        def loaded(key: tuple[str, str] = key) -> Any:  # e.g. Triton: loaded, verified, once
            if key not in models:
                models[key] = load_approved(f"{key[0]}/{key[1]}")
            return models[key]

        if cases is None:  # a warm-up: the recorder is loaded; say so
            _answer(_READY)
            continue
        record_cases(recorder, cases, loaded)


if __name__ == "__main__":
    main()
