"""A separate Ray head on 127.0.0.1 (``ray start --head --block``) for tests and CI: what
``RAY_ADDRESS`` points at when RadGate trains or serves on an existing cluster.

Every port is a free loopback port (several Ray instances share this machine: the defaults, such
as the client server's 10001, would collide) and the temp dir is private, so stopping this head
never touches another Ray. ``--block`` keeps ``ray start`` in the foreground: stopping it (SIGTERM)
stops the processes it started; anything left that names our temp dir is then killed by PID.

- imported by path: ``RayHead(workdir).start()`` -> ``.address`` (``127.0.0.1:PORT``), ``.stop()``;
- ``python scripts/ci/ray_head.py start`` prints one JSON line and waits; Ctrl-C / SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class RayHeadError(RuntimeError):
    """The head did not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayHead:
    #: Short on purpose: Ray's Unix socket paths must stay under 107 characters.
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rg-ray-", dir="/tmp")))
    port: int = field(default_factory=free_port)
    num_cpus: int = 2
    object_store_bytes: int = 256 * 1024**2
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    #: More ``ray start`` parameters as KubeRay passes its ``rayStartParams`` (``--KEY=VALUE``),
    #: replacing a default of the same key (e.g. ``{"include-dashboard": "true"}``).
    start_params: dict[str, str] = field(default_factory=dict)
    #: Ray token authentication (as KubeRay's ``authOptions: {mode: token}``); None: disabled.
    auth_token: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        # Token authentication is on by default in Ray 2.60; a test head runs without it unless
        # it is given a token.
        if self.auth_token is not None:
            auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.auth_token}
        else:
            auth = {"RAY_AUTH_MODE": "disabled"}
        return {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout: float = 120, attempts: int = 2) -> RayHead:
        """Start the head; on a loaded machine the raylet can miss Ray's fixed 30 s registration
        deadline, so a failed start is cleaned up and tried again."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout)
            except RayHeadError:
                if attempt == attempts:
                    raise
                self.temp_dir = Path(tempfile.mkdtemp(prefix="rg-ray-", dir="/tmp"))
                self.port = free_port()
                self.output = []
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> RayHead:
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray) if ray.exists() else "ray", "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={self.port}",
            f"--num-cpus={self.num_cpus}", "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            "--include-dashboard=false", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]  # fmt: skip
        if self.start_params:
            command = [a for a in command if a.split("=", 1)[0].lstrip("-") not in self.start_params]
            command += [f"--{key}={value}" for key, value in self.start_params.items()]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env(),
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=0.5)
                self.output.append(line)
                if "Ray runtime started" in line:
                    return self
            except queue.Empty:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RayHeadError("ray start --head failed:\n" + "".join(self.output)[-3000:])

    def _leftover_pids(self) -> list[int]:
        marker = str(self.temp_dir).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        for pid in self._leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start"])
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args(argv)
    head = RayHead(num_cpus=args.num_cpus).start()
    print(json.dumps({"address": head.address, "temp_dir": str(head.temp_dir)}), flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    head.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
