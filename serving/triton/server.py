"""Start and stop the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel bundles.

The wheel needs numpy<2, so it is installed apart (``scripts/ci/install-triton.sh``:
``pip install --no-deps --target $RADGATE_TRITON_HOME/pytriton nvidia-pytriton==0.7.0``) and only
its binary is used. The Python backend needs a backend directory with ``libtriton_python.so``,
the stub for this Python, and ``triton_python_backend_utils.py``; ``LD_LIBRARY_PATH`` with this
Python's own ``lib/`` and the wheel's bundled libraries; ``PYTHONPATH`` with our site-packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

from governance.tls import ServerTls
from serving.net import free_port

__all__ = ["TritonNotInstalled", "TritonServer", "default_triton_home", "find_tritonserver"]


class TritonNotInstalled(RuntimeError):
    """No tritonserver binary found (run scripts/ci/install-triton.sh)."""


def default_triton_home() -> Path:
    return Path(os.environ.get("RADGATE_TRITON_HOME", Path.home() / ".cache" / "radgate" / "triton"))


def find_tritonserver(home: Path | None = None) -> Path:
    """The ``tritonserver`` directory of the installed wheel (``bin/``, ``backends/``...)."""
    root = (home or default_triton_home()) / "pytriton" / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonNotInstalled(f"tritonserver not found under {root}: run scripts/ci/install-triton.sh")
    return root


class TritonServer:
    """A local tritonserver on 127.0.0.1 serving ``repo`` (CPU, Python backend)."""

    def __init__(
        self,
        repo: Path,
        work_dir: Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        home: Path | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        """``tls``: the gRPC endpoint (the one RadGate calls) speaks TLS only, mutual when
        ``tls.require_client_certificate``; the HTTP endpoint stays on 127.0.0.1 for the
        readiness probe (Triton's HTTP server has no TLS)."""
        self.root = find_tritonserver(home)
        self.repo = Path(repo)
        self.work_dir = Path(work_dir)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "tritonserver.log"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _backend_dir(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        target = self.work_dir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        source = self.root / "backends" / "python"
        stub = self.root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise TritonNotInstalled(f"no Python {version} backend stub in the nvidia-pytriton wheel")
        for path in (source / "libtriton_python.so", source / "triton_python_backend_utils.py", stub):
            shutil.copy2(path, target / path.name)
        return target.parent

    def environment(self) -> dict[str, str]:
        libs = [str(Path(sysconfig.get_config_var("LIBDIR") or Path(sys.base_prefix) / "lib"))]
        libs.append(str(self.root.parents[1] / "nvidia_pytriton.libs"))
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        site_packages = [p for p in sys.path if p.endswith("site-packages")]
        env["PYTHONPATH"] = ":".join(site_packages)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # the model repository stays as published
        return env

    def _tls_arguments(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        arguments = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={tls.certificate}",
            f"--grpc-server-key={tls.private_key}",
        ]
        if tls.ca_file is not None:
            arguments.append(f"--grpc-root-cert={tls.ca_file}")
        if tls.require_client_certificate:
            arguments.append("--grpc-use-ssl-mutual=true")
        return arguments

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.root / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={self._backend_dir()}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--exit-on-error=false",
            # Nothing loads by itself: RadGate's loader loads each model from verified bytes
            # (serving.triton.publish), and the repository is never polled for changes.
            "--model-control-mode=explicit",
            "--log-verbose=0",
            *self._tls_arguments(),
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}); see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
