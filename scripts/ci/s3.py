"""An S3-compatible server on 127.0.0.1 for tests and CI: moto's S3 API server in its own process.

MinIO is what ``docker/compose.yaml`` runs; it has no pip or Debian package, so the tests use
moto's real HTTP server (the same S3 REST API, signed requests) on a free loopback port. Clients
find it the standard way: ``AWS_ENDPOINT_URL`` (boto3, s3fs/fsspec) and ``MLFLOW_S3_ENDPOINT_URL``
(MLflow's artifact store), with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.

- imported by path: ``S3Server(workdir).start()``, ``.create_bucket(name)``, ``.env()``, ``.stop()``;
- ``python scripts/ci/s3.py start --dir DIR --bucket radgate`` prints one JSON line (endpoint,
  the env to export) and leaves it running; ``python scripts/ci/s3.py stop --dir DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class S3ServerError(RuntimeError):
    """The S3 server did not start or a bucket could not be created."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    workdir: Path
    port: int = field(default_factory=free_port)
    access_key: str = "radgate-test"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client process (RadGate, MLflow server, Ray workers) needs to reach the store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def start(self, timeout: float = 60) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "moto.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise S3ServerError(f"moto server exited: {(self.workdir / 'moto.log').read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise S3ServerError("moto server did not answer") from None
                time.sleep(0.2)
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
        )  # fmt: skip

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start the server, create buckets, print one JSON line")
    start.add_argument("--dir", type=Path, required=True)
    start.add_argument("--bucket", action="append", default=None, help="bucket to create (repeatable)")
    stop = sub.add_parser("stop", help="stop the server started in --dir")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state_file = args.dir / "radgate-s3.json"
    if args.command == "start":
        server = S3Server(args.dir).start()
        for bucket in args.bucket or ["radgate"]:
            server.create_bucket(bucket)
        assert server.process is not None
        state = {"pid": server.process.pid, "endpoint": server.endpoint, "env": server.env()}
        state_file.write_text(json.dumps(state))
        os.chmod(state_file, 0o600)
        print(json.dumps(state))
        return 0
    state = json.loads(state_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(state["pid"], signal.SIGTERM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
