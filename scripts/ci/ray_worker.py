"""A second Ray node on 127.0.0.1 joining a head (``ray start --address HEAD --block``) with its
own CPUs and its own temp dir, for multi-node tests and benchmarks; ``kill()`` takes the whole
node down at once (SIGKILL to its process group), as a machine that dies.

Imported by path beside ``scripts/ci/ray_head.py``: ``RayWorker(head.address, num_cpus=1).start()``
-> ``.node_id`` once it has registered; ``.kill()`` or ``.stop()``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


def _ray_head() -> ModuleType:
    """``ray_head.py`` beside this file (scripts/ci is not a package), loaded once."""
    name = "radgate_ci_ray_head"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("ray_head.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


free_port = _ray_head().free_port


class RayWorkerError(RuntimeError):
    """The node did not join the cluster."""


@dataclass
class RayWorker:
    head_address: str
    num_cpus: int = 1
    #: Short on purpose (Ray's socket paths must stay under 107 characters); not the head's.
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rg-rayw-", dir="/tmp")))
    object_store_bytes: int = 128 * 1024**2
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    def start(self, timeout: float = 120) -> RayWorker:
        """Start the node and wait until the head lists it alive (its node id is then known)."""
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray) if ray.exists() else "ray", "start", "--block",
            f"--address={self.head_address}", "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]  # fmt: skip
        # The nodes already listed, read before this one starts: ``ray status`` reads the
        # autoscaler's view, which lags the GCS, so wait until it lists at least the head
        # (an empty view here made the head look like the node that joined).
        deadline = time.monotonic() + timeout
        before = set(self._alive_nodes())
        while not before:
            if time.monotonic() > deadline:
                raise RayWorkerError(f"the head at {self.head_address} lists no active node")
            time.sleep(1)
            before = set(self._alive_nodes())
        log = (self.temp_dir / "ray-start.log").open("ab")
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        while True:
            if self.process.poll() is not None:
                raise RayWorkerError("ray start --address failed:\n" + self.log()[-3000:])
            joined = [node for node in self._alive_nodes() if node not in before]
            if joined:
                self.node_id = joined[0]
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RayWorkerError("the node did not join the cluster:\n" + self.log()[-3000:])
            time.sleep(1)

    def _alive_nodes(self) -> list[str]:
        """Node ids the head lists active (``ray status``: it reads the GCS, needs no dashboard
        and leaves no driver connected)."""
        ray = Path(sys.executable).with_name("ray")
        result = subprocess.run(
            [str(ray) if ray.exists() else "ray", "status", "--address", self.head_address],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        )  # fmt: skip
        nodes, active = [], False
        for line in result.stdout.splitlines():
            if line.strip().endswith(":"):
                active = line.strip() == "Active:"
            elif active and "node_" in line:
                nodes.append(line.split("node_", 1)[1].strip())
        return nodes

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.temp_dir / "ray-start.log").read_text(errors="replace")
        return ""

    def kill(self) -> None:
        """SIGKILL the node's whole process group: raylet, object store, workers, all at once."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _leftover_pids(self) -> list[int]:
        """Processes still naming this node's temp dir (as the head finds its own)."""
        return list(_ray_head().RayHead._leftover_pids(self))

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
