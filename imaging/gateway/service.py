"""``radgate gateway``: the C-STORE SCP and the STOW-RS listener as one long-running service.

Start-up prints one JSON line (``{"event": "ready", ...}``) with the bound ports, so that
supervisors and tests can use port 0. SIGTERM (or SIGINT) drains: no new associations or
requests are accepted, transfers in flight finish (up to ``drain_timeout``), then it exits.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from imaging.gateway.config import Acknowledge, GatewayConfig
from imaging.gateway.recovery import RunJournal
from imaging.gateway.scp import GatewayStats, StorageSCP, freeze_startup_heap
from imaging.gateway.sink import Sink
from imaging.gateway.workers import Drainers, WorkerPool

__all__ = ["GatewayService"]

LOGGER = logging.getLogger(__name__)


def _prepare_shared_state() -> None:
    from governance.catalog import open_catalog
    from governance.keys import load_project_key

    load_project_key()
    open_catalog().engine.dispose()


class _NotYet:
    """Placeholder sink until the process that serves has built its own."""

    def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> Any:
        raise RuntimeError("the ingest path is not ready")


class GatewayService:
    def __init__(self, config: GatewayConfig, sink_factory: Callable[[], Sink]) -> None:
        self.config = config
        self.sink_factory = sink_factory
        self.stats = GatewayStats()
        self.scp = StorageSCP(config.dicom, _NotYet(), self.stats)
        self.pool: WorkerPool | None = None
        self._http: Any = None  # uvicorn.Server
        self._http_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.http_port: int | None = None
        self.swept_temp_files = 0
        self.journal: RunJournal | None = None
        self.recovered: dict[str, int] = {}
        self.spool_backlog = 0  # entries an earlier run left in the receive spool

    def start(self) -> None:
        from imaging.gateway.recovery import RunJournal, sweep_stale_temp_files

        self.swept_temp_files = sweep_stale_temp_files(self.config.stale_temp_age)
        # A previous run that did not stop cleanly may have left objects its catalog never
        # recorded (killed between the two): check them before serving (and later, when too
        # young to judge now).
        self.journal = RunJournal.load()
        self.journal.begin()
        self.recovered = self.journal.reconcile(self.config.stale_temp_age).as_dict()
        self.scp.bind()
        drainers = self._spool()
        if self.config.dicom.workers > 1 or drainers is not None:
            # Migrate the catalog and create the key once, here; fork before any thread exists
            # and without open database connections; each worker builds its own ingest path.
            _prepare_shared_state()
            self.pool = WorkerPool(
                self.scp, self.sink_factory, self.config.dicom.workers, self.config.drain_timeout, drainers
            )
            self.pool.start()
            self.sink: Sink | None = None
        else:
            self.sink = self.scp.sink = self.sink_factory()
            freeze_startup_heap()
            self.scp.serve()
        if self.config.http.enabled:
            self._start_http()

    def _spool(self) -> Drainers | None:
        """With ``dicom.acknowledge: received``: the receive spool the SCP writes and the
        drainers read (left over entries of an earlier run are drained first; writes a crash
        cut short were never acknowledged and are removed)."""
        if self.config.dicom.acknowledge is not Acknowledge.RECEIVED:
            return None
        from governance.keyring import GATEWAY_SPOOL, load_store_key
        from governance.settings import get_settings
        from imaging.gateway.spool import Spool

        settings = self.config.spool
        spool = Spool(
            settings.directory or get_settings().home / "spool",
            load_store_key(GATEWAY_SPOOL),
            max_bytes=settings.max_bytes,
            max_files=settings.max_files,
        )
        spool.remove_incomplete()
        self.spool_backlog = spool.depth(fresh=True)[0]
        self.scp.spool = spool
        return Drainers(spool, settings.drainers, settings.drainer_nice)

    def _start_http(self) -> None:
        import uvicorn

        from imaging.gateway.stow import create_stow_app

        sink = self.sink or self.sink_factory()
        app = create_stow_app(sink, max_request_bytes=self.config.http.max_request_bytes)
        tls = self.config.http.tls
        http = uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.config.http.host,
                port=self.config.http.port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=max(1, int(self.config.drain_timeout)),
                lifespan="off",
                **(tls.uvicorn_options() if tls is not None else {}),
            )
        )
        # Run off the main thread: uvicorn then leaves the signals to this service.
        thread = threading.Thread(target=http.run, name="stow-rs", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not http.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                http.should_exit = True
                if self.pool is not None:
                    self.pool.stop()
                else:
                    self.scp.stop(0)
                raise RuntimeError("the STOW-RS listener did not start (port in use?)")
            time.sleep(0.02)
        self.http_port = int(http.servers[0].sockets[0].getsockname()[1])
        self._http, self._http_thread = http, thread

    def ready_message(self) -> dict[str, Any]:
        return {
            "event": "ready",
            "ae_title": self.config.dicom.ae_title,
            "dicom_host": self.config.dicom.host,
            "dicom_port": self.scp.port,
            "workers": self.config.dicom.workers,
            "http_host": self.config.http.host if self.config.http.enabled else None,
            "http_port": self.http_port,
            "http_tls": self.config.http.tls is not None,
            "dicom_tls": self.config.dicom.tls is not None,
            "swept_temp_files": self.swept_temp_files,
            "recovered": self.recovered,
            "acknowledge": self.config.dicom.acknowledge.value,
            "spool_backlog": self.spool_backlog,
        }

    def stop(self) -> dict[str, Any]:
        """Drain and stop both listeners; returns the final counters."""
        timeout = self.config.drain_timeout
        if self._http is not None:
            self._http.should_exit = True
        if self.pool is not None:
            totals, aborted = self.pool.stop()
            self.stats.add(**totals)
        else:
            aborted = self.scp.stop(timeout)
        if self._http_thread is not None:
            self._http_thread.join(timeout + 5)
        return {"event": "stopped", "aborted_associations": aborted, **self.stats.snapshot()}

    def _deferred_recovery(self) -> None:
        """Windows of an interrupted run holding objects too young to judge at start-up."""
        journal = self.journal
        if journal is None or not journal.pending:
            return
        if time.time() - journal.pending[0][1] < self.config.stale_temp_age:
            return
        try:
            journal.reconcile(self.config.stale_temp_age)
        except Exception as exc:  # recovery must never stop intake; it is retried at next start
            LOGGER.error("deferred recovery failed: %s", type(exc).__name__)

    def request_stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        self._stop.set()

    def run_forever(self) -> dict[str, Any]:
        """Start, announce readiness, serve until SIGTERM/SIGINT, drain, return the counters."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        print(json.dumps(self.ready_message()), flush=True)
        failed = False
        while not self._stop.wait(1.0):
            if self.pool is not None and self.pool.lost_worker():
                LOGGER.error("a gateway worker died: stopping (let the supervisor restart the service)")
                failed = True
                break
            self._deferred_recovery()
        LOGGER.warning("stopping: draining transfers in flight")
        final = self.stop()
        final["failed_worker"] = failed
        if self.journal is not None and not failed:
            self.journal.end()  # a clean stop: nothing of this run to check at the next start
        print(json.dumps(final), flush=True)
        sys.stdout.flush()
        return final
