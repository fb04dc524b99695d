"""The inference AE: a C-STORE SCP a PACS routes studies to; each instance is sent to the
serving API (``/v1/models/{model}/predict?push=true``), so the same token, gate, audit and
metrics apply, and the results go back to the PACS configured in the serving app.

The SCP answers success once an instance is queued (the PACS does not wait for inference);
a worker thread posts instances in order. For a segmentation model (``series_mode``, asked of
the serving API at start when not given) the instances of an association are gathered and,
when the association is released, each series is posted whole as ``multipart/related``, so the
model sees a volume and the SEG + SR go back to the PACS. Only known calling AE titles are
accepted. Log lines carry counts and statuses, never identifiers.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from imaging.gateway.scp import set_tcp_nodelay

__all__ = ["InferenceAE", "InferenceStats"]

LOGGER = logging.getLogger(__name__)
_REFUSED = 0xA700  # Out of resources: refused (queue full)
_KEPT_ANSWERS = 100


@dataclass
class InferenceStats:
    received: int = 0
    predicted: int = 0  # requests answered 200 (one per instance, or per series in series mode)
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    #: The last answers (no identifiers: serving's request id, model version, label, calibrated
    #: probability, how many result objects went back to the PACS), newest last.
    answers: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEPT_ANSWERS))


class InferenceAE:
    """C-STORE SCP on ``host:port`` forwarding to ``serve_url`` for ``model``."""

    def __init__(
        self,
        *,
        serve_url: str,
        model: str,
        token: str,
        ae_title: str = "RADGATE-AI",
        host: str = "127.0.0.1",
        port: int = 11113,
        allowed_aes: set[str] | None = None,
        max_queue: int = 256,
        series_mode: bool | None = None,
        tls: ssl.SSLContext | None = None,
        serve_ca_file: str | None = None,
    ) -> None:
        self.serve_url = serve_url.rstrip("/")
        self.model = model
        self._token = token
        self.ae_title, self.host, self.port = ae_title, host, port
        self.allowed_aes = allowed_aes
        self.stats = InferenceStats()
        self.series_mode = series_mode
        self.tls = tls  # DICOM TLS on the listener (plaintext refused when set)
        # Verify the serving API's HTTPS certificate against this CA (default: system CAs).
        self._verify: str | bool = serve_ca_file or True
        self._queue: queue.Queue[bytes | list[bytes] | None] = queue.Queue(maxsize=max_queue)
        self._pending: dict[int, dict[str, list[bytes]]] = {}  # association -> series -> instances
        self._pending_lock = threading.Lock()
        self._server: Any = None
        self._worker: threading.Thread | None = None

    def _on_store(self, event: evt.Event) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        if self.allowed_aes is not None and calling not in self.allowed_aes:
            return 0x0124  # Refused: not authorized
        dataset: Dataset = event.dataset
        dataset.file_meta = event.file_meta
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        if self.series_mode:
            series = str(dataset.get("SeriesInstanceUID", ""))
            with self._pending_lock:
                self._pending.setdefault(id(event.assoc), {}).setdefault(series, []).append(buffer.getvalue())
            self.stats.received += 1
            return 0x0000
        try:
            self._queue.put_nowait(buffer.getvalue())
        except queue.Full:
            return _REFUSED
        self.stats.received += 1
        return 0x0000

    def _on_release(self, event: evt.Event) -> None:
        """End of an association: queue each gathered series as one request."""
        with self._pending_lock:
            gathered = self._pending.pop(id(event.assoc), {})
        for instances in gathered.values():
            try:
                self._queue.put(instances, timeout=60)
            except queue.Full:
                self.stats.failed += 1
                LOGGER.warning("inference AE: queue full, a series of %d instance(s) dropped", len(instances))

    def _on_abort(self, event: evt.Event) -> None:
        """An aborted association may have sent part of a series: nothing of it is inferred."""
        with self._pending_lock:
            gathered = self._pending.pop(id(event.assoc), {})
        if gathered:
            self.stats.failed += len(gathered)
            LOGGER.warning("inference AE: association aborted, %d partial series dropped", len(gathered))

    def _model_task(self) -> str:
        """The served model's task, from ``GET /v1/models`` (classification when unknown)."""
        import httpx

        try:
            reply = httpx.get(
                f"{self.serve_url}/v1/models",
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=60,
                verify=self._verify,
            )
            models = reply.json().get("models", []) if reply.status_code == 200 else []
        except (httpx.HTTPError, ValueError):
            models = []
        task = next((m.get("task") for m in models if m.get("name") == self.model), None)
        return str(task or "classification")

    def _run(self) -> None:
        import httpx

        from imaging.gateway.multipart import build_related

        url = f"{self.serve_url}/v1/models/{self.model}/predict?push=true"
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/dicom"}
        with httpx.Client(timeout=300, verify=self._verify) as client:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                body, content_type = build_related(item) if isinstance(item, list) else (item, None)
                sent = {**headers, "Content-Type": content_type} if content_type else headers
                reply = None
                try:
                    reply = client.post(url, content=body, headers=sent)
                    status = reply.status_code
                except httpx.HTTPError:
                    status = -1
                self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
                if status == 200 and reply is not None:
                    self.stats.predicted += 1
                    self._keep_answer(reply)
                else:
                    self.stats.failed += 1
                    LOGGER.warning("inference AE: serving answered %s", status)
                self._queue.task_done()

    def _keep_answer(self, reply: Any) -> None:
        try:
            answer = reply.json()
        except ValueError:
            return
        model = answer.get("model") or {}
        for result in answer.get("results") or []:
            self.stats.answers.append(
                {
                    "request_id": result.get("request_id"),
                    "model": model.get("name"),
                    "version": model.get("version"),
                    "label": (result.get("decision") or {}).get("label", result.get("task")),
                    "probability": result.get("probability"),
                    "pushed": (answer.get("pushed") or {}).get("sent"),
                }
            )

    def start(self) -> InferenceAE:
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        if self.series_mode is None:
            self.series_mode = self._model_task() == "segmentation"
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, set_tcp_nodelay)]
        if self.series_mode:
            handlers += [(evt.EVT_RELEASED, self._on_release), (evt.EVT_ABORTED, self._on_abort)]
        self._worker = threading.Thread(target=self._run, name="inference-ae", daemon=True)
        self._worker.start()
        self._server = ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers, ssl_context=self.tls
        )
        return self

    def drain(self) -> None:
        """Wait until every received instance went through serving."""
        self._queue.join()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=60)
            self._worker = None
