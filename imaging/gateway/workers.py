"""Pre-forked SCP worker processes: one listening socket, ``dicom.workers`` processes accepting
on it, each with its own ingest path (threads within a process share one GIL; processes use
every core). Linux only (fork, PR_SET_PDEATHSIG).

The parent forks before it starts any thread, forwards SIGTERM, and sums the workers' counters.
A worker dies with its parent (PR_SET_PDEATHSIG), so a killed gateway leaves no orphan SCP.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

from imaging.gateway.scp import AcceptBalance, StorageSCP, freeze_startup_heap
from imaging.gateway.sink import Sink

if TYPE_CHECKING:
    from imaging.gateway.spool import Spool

__all__ = ["Drainers", "WorkerPool"]

LOGGER = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    pid: int
    stats_fd: int
    exited: bool = False


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Drainers:
    """Processes that ingest the receive spool (``dicom.acknowledge: received``)."""

    spool: Spool
    count: int
    nice: int  # added CPU niceness: the SCP workers, which answer senders, go first


class WorkerPool:
    def __init__(
        self,
        scp: StorageSCP,
        sink_factory: Callable[[], Sink],
        count: int,
        drain_timeout: float,
        drainers: Drainers | None = None,
    ) -> None:
        self.scp = scp
        self.sink_factory = sink_factory
        self.count = count
        self.drain_timeout = drain_timeout
        self.drainers = drainers
        self.workers: list[_Worker] = []
        # Associations held by each worker, in memory shared across the fork (accept balancing).
        self.associations = multiprocessing.RawArray("i", count)

    def start(self) -> None:
        """Fork the workers (and the spool's drainers); ``scp`` must be bound and no thread may
        be running yet."""
        roles: list[Callable[[int], None]] = [partial(self._run_worker, index=i) for i in range(self.count)]
        if self.drainers is not None:
            roles += [self._run_drainer] * self.drainers.count
        for role in roles:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # worker
                os.close(read_fd)
                role(write_fd)  # never returns
            os.close(write_fd)
            self.workers.append(_Worker(pid, read_fd))
        self.scp.close_listener()  # only the workers accept

    @staticmethod
    def _forked(stats_fd: int, role: str, body: Callable[[threading.Event], dict[str, int]]) -> None:
        """The life of a forked process: dies with the parent, SIGTERM/SIGINT set ``stop``,
        ``body(stop)`` runs and returns its counters, which go to the parent through
        ``stats_fd``; never returns into the parent's code."""
        code = 0
        try:
            _die_with_parent()
            stop = threading.Event()

            def request_stop(_signum: int, _frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
            os.write(stats_fd, json.dumps(body(stop)).encode())
        except BaseException:
            LOGGER.exception("gateway %s failed", role)
            code = 1
        finally:
            os._exit(code)

    @staticmethod
    def _orphan_watch(stop: threading.Event) -> None:
        """Until ``stop`` is set; sets it when the parent is gone (PDEATHSIG unavailable)."""
        while not stop.wait(1.0):
            if os.getppid() == 1:
                stop.set()

    def _run_drainer(self, stats_fd: int) -> None:
        def drain(stop: threading.Event) -> dict[str, int]:
            from imaging.gateway.spool import SpoolDrainer

            self.scp.close_listener()
            assert self.drainers is not None
            os.nice(self.drainers.nice)
            counts = {"drained": 0, "quarantined": 0}

            def counted(status: str) -> None:
                counts["drained"] += 1
                if status == "quarantined":
                    counts["quarantined"] += 1

            drainer = SpoolDrainer(self.drainers.spool, self.sink_factory(), on_outcome=counted)
            freeze_startup_heap()
            threading.Thread(target=self._orphan_watch, args=(stop,), daemon=True).start()
            drainer.run(stop)  # finishes the entry in hand, leaves the rest for the next start
            return counts

        self._forked(stats_fd, "spool drainer", drain)

    def _run_worker(self, stats_fd: int, *, index: int) -> None:
        def serve(stop: threading.Event) -> dict[str, int]:
            self.scp.balance_with(AcceptBalance(self.associations, index))
            self.scp.sink = self.sink_factory()
            freeze_startup_heap()
            self.scp.serve()
            self._orphan_watch(stop)
            aborted = self.scp.stop(self.drain_timeout)
            return {**self.scp.stats.snapshot(), "aborted": aborted}

        self._forked(stats_fd, "worker", serve)

    def lost_worker(self) -> bool:
        """Whether a worker has exited on its own (crash, OOM kill...)."""
        for worker in self.workers:
            if worker.exited:
                return True
            pid, _ = os.waitpid(worker.pid, os.WNOHANG)
            if pid:
                worker.exited = True
                return True
        return False

    def stop(self) -> tuple[dict[str, int], int]:
        """SIGTERM every worker, wait for them to drain; the summed counters and aborts."""
        for worker in self.workers:
            if not worker.exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        totals: dict[str, int] = {}
        aborted = 0
        deadline = time.monotonic() + self.drain_timeout + 30
        for worker in self.workers:
            while not worker.exited and time.monotonic() < deadline:
                pid, _ = os.waitpid(worker.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.05)
            else:
                if not worker.exited:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
                    os.waitpid(worker.pid, 0)
            with os.fdopen(worker.stats_fd, "rb") as pipe:
                raw = pipe.read()
            if raw:
                counts = json.loads(raw)
                aborted += int(counts.pop("aborted", 0))
                for key, value in counts.items():
                    totals[key] = totals.get(key, 0) + int(value)
        return totals, aborted
