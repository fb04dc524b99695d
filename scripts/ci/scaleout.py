"""The scale-out backends on one machine, for trying the same CLI with other settings:
PostgreSQL 15 (catalog + MLflow), an S3 API server, an MLflow server (PostgreSQL backend,
artifacts proxied to S3) and a separate Ray head, all on 127.0.0.1.

    python scripts/ci/scaleout.py up --dir /tmp/rg-scale      # starts them, writes DIR/scaleout.env
    set -a; . /tmp/rg-scale/scaleout.env; set +a               # RADGATE_*, AWS_*, RAY_ADDRESS
    radgate users add me --role admin                          # first user of the new catalog
    radgate users add sam --role data-steward --token ADMIN    # and eve, an ml-engineer
    RADGATE_TOKEN=SAM radgate ingest ... ; RADGATE_TOKEN=SAM radgate dataset create ...
    RADGATE_TOKEN=EVE radgate train CONFIG --workers 2
    python scripts/ci/scaleout.py down --dir /tmp/rg-scale

``up`` leaves a supervisor process that owns every service and stops them all on ``down``
(SIGTERM). The env file holds test credentials (mode 0600); nothing here is for production.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
BUCKET = "radgate"


def _load(name: str) -> ModuleType:
    module_name = f"radgate_ci_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def start_mlflow(workdir: Path, backend: str, env: dict[str, str], artifacts: str) -> tuple[Any, str]:
    """``mlflow server`` on a free loopback port (job runner off: 0.5 GiB instead of 2.3)."""
    port = _load("postgres").free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow) if mlflow.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend, "--artifacts-destination", artifacts, "--serve-artifacts",
        "--workers", "1",
    ]  # fmt: skip
    log = (workdir / "mlflow.log").open("ab")
    process = subprocess.Popen(
        command,
        env={**os.environ, **env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(workdir / 'mlflow.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return process, url
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("mlflow server did not become healthy")
        time.sleep(0.5)


def supervise(workdir: Path) -> int:
    """Start everything, write the env file, wait for SIGTERM, stop everything."""
    postgres_ci, s3_ci, ray_ci = _load("postgres"), _load("s3"), _load("ray_head")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    pg_dir = postgres_ci.scratch_dir()
    postgres = postgres_ci.PostgresCluster(pg_dir)
    s3 = s3_ci.S3Server(workdir / "s3")
    ray = ray_ci.RayHead()
    mlflow = None
    status = workdir / "status.json"
    try:
        postgres.start()
        catalog = postgres.create_database("radgate")
        backend = postgres.create_database("mlflow")
        s3.start()
        s3.create_bucket(BUCKET)
        mlflow, mlflow_url = start_mlflow(workdir, backend, s3.env(), f"s3://{BUCKET}/mlflow")
        ray.start()
        env = {
            **s3.env(),
            "RADGATE_CATALOG_URL": catalog,
            "RADGATE_MLFLOW_TRACKING_URI": mlflow_url,
            "RADGATE_OBJECT_STORE": f"s3://{BUCKET}/store",
            "RAY_ADDRESS": ray.address,
            "RAY_AUTH_MODE": "disabled",
        }
        env_file = workdir / "scaleout.env"
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
        os.chmod(env_file, 0o600)
        status.write_text(json.dumps({"ready": True, "env_file": str(env_file)}))
        stopping.wait()
        return 0
    except Exception as exc:
        status.write_text(json.dumps({"ready": False, "error": str(exc)[-2000:]}))
        return 1
    finally:
        if mlflow is not None:
            mlflow.terminate()
            try:
                mlflow.wait(20)
            except subprocess.TimeoutExpired:
                mlflow.kill()
        ray.stop()
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "supervise"])
    parser.add_argument("--dir", type=Path, required=True, help="working directory (logs, env file)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for `up`")
    args = parser.parse_args(argv)
    workdir = args.dir.resolve()
    pid_file = workdir / "supervisor.pid"
    if args.command == "supervise":
        return supervise(workdir)
    if args.command == "down":
        if not pid_file.exists():
            print("nothing running", file=sys.stderr)
            return 1
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.5)
        pid_file.unlink(missing_ok=True)
        print("stopped")
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "status.json").unlink(missing_ok=True)
    log = (workdir / "supervisor.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, __file__, "supervise", "--dir", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if (workdir / "status.json").exists():
            state = json.loads((workdir / "status.json").read_text())
            if state.get("ready"):
                print(f"ready: set -a; . {state['env_file']}; set +a")
                return 0
            print(f"failed: {state.get('error')}", file=sys.stderr)
            return 1
        if process.poll() is not None:
            print(f"supervisor exited: see {workdir / 'supervisor.log'}", file=sys.stderr)
            return 1
        time.sleep(1)
    print("timed out waiting for the services", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
