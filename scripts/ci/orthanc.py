"""Start and stop a private Orthanc PACS on 127.0.0.1 for tests, benchmarks and CI.

Used three ways:

- imported by path (``load_orthanc_module()`` in ``tests/integration/conftest.py`` and
  ``scripts/bench/gateway.py``): ``OrthancServer(workdir).start()`` / ``.stop()``;
- ``python scripts/ci/orthanc.py start --dir DIR`` prints one JSON line (ports, AE title, user)
  and leaves Orthanc running; ``python scripts/ci/orthanc.py stop --dir DIR`` stops it.

Orthanc listens for DICOM on every interface (it has no bind option), so it is locked down:
``RemoteAccessAllowed: false`` for HTTP, an HTTP user, known AE titles only
(``DicomCheckModalityHost``, no store/echo from unknown peers). ``TCP_NODELAY=1`` is set in its
environment: without it every C-STORE waits about 90 ms on Nagle + delayed ACK.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
PLUGINS = ("libOrthancDicomWeb.so", "libOrthancGdcm.so")


class OrthancError(RuntimeError):
    """Orthanc could not be started or answered with an error."""


SSL_SHIM_SOURCE = Path(__file__).resolve().parents[2] / "docker" / "peers" / "orthanc-sslshim.c"


def civetweb_ssl_shim(directory: Path) -> Path | None:
    """A directory for ``LD_LIBRARY_PATH`` holding ``docker/peers/orthanc-sslshim.c`` built as
    ``libssl.so`` (and ``libcrypto.so``), when this Orthanc's civetweb needs it for HTTPS (Debian's
    civetweb 1.15 with OpenSSL 3 crashes on the first HTTPS connection otherwise); ``None`` when it
    does not. The local compose stack's Orthanc image carries the same shim."""
    import ctypes

    civetweb = next(
        (
            Path(line.split("=>")[1].split()[0])
            for line in subprocess.run(
                ["ldd", shutil.which("Orthanc") or "Orthanc"], capture_output=True, text=True
            ).stdout.splitlines()
            if "libcivetweb" in line and "=>" in line
        ),
        None,
    )
    if civetweb is None or b"SSL_get_peer_certificate" not in civetweb.read_bytes():
        return None
    try:
        if hasattr(ctypes.CDLL("libssl.so.3"), "SSL_get_peer_certificate"):
            return None
    except OSError:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "libssl.so"
    if not library.exists():
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise OrthancError("Orthanc's HTTPS here needs the civetweb shim, and no C compiler is installed")
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SSL_SHIM_SOURCE),
             "-Wl,--no-as-needed", "-l:libssl.so.3"],
            check=True,
        )  # fmt: skip
    crypto = directory / "libcrypto.so"  # civetweb also dlopens the unversioned libcrypto
    if not crypto.is_symlink():
        listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines()
        target = next((line.rsplit("=> ", 1)[1] for line in listed if "libcrypto.so.3 " in line), None)
        if target is not None:
            crypto.symlink_to(target)
    return directory


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dicom_env() -> dict[str, str]:
    """Environment for Orthanc and dcmtk tools: TCP_NODELAY on (dcmtk reads it)."""
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class OrthancServer:
    """One Orthanc process with its own storage under ``workdir``."""

    workdir: Path
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    user: str = "radgate"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    # name -> (AE title, host, port): peers Orthanc accepts associations from and sends to.
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # Serve the OHIF Viewer under /ohif/ (imaging.gateway.viewer; scripts/ci/install-viewer.sh).
    viewer: bool = False
    # Merged over the generated configuration last (e.g. DICOM TLS: DicomTlsEnabled...).
    extra_config: dict[str, Any] = field(default_factory=dict)
    # HTTPS (``SslEnabled`` in ``extra_config``): the CA its certificate is verified against;
    # the REST calls then go to https://localhost (a name the certificate carries).
    https_ca: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.https_ca is not None:
            return f"https://localhost:{self.http_port}"
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def viewer_url(self, study_instance_uid: str) -> str:
        from imaging.gateway.viewer import viewer_url

        return viewer_url(self.url, study_instance_uid)

    def config(self) -> dict[str, Any]:
        config = self._base_config()
        if self.viewer:
            from imaging.gateway.viewer import build_site, orthanc_viewer_config

            extra = orthanc_viewer_config(build_site(self.workdir / "ohif"))
            config["Plugins"] += extra.pop("Plugins")
            config.update(extra)
        config.update(self.extra_config)
        return config

    def _base_config(self) -> dict[str, Any]:
        return {
            "Name": "radgate-test-pacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "UnknownSopClassAccepted": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "HttpDescribeErrors": False,
            "SaveJobs": False,
            "StableAge": 1,
            "Plugins": [str(PLUGIN_DIR / name) for name in PLUGINS if (PLUGIN_DIR / name).exists()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "Gdcm": {"Enable": True},
            "DicomModalities": {
                name: {"AET": aet, "Host": host, "Port": port, "AllowEcho": True, "AllowStore": True}
                for name, (aet, host, port) in self.modalities.items()
            },
        }

    def start(self, timeout: float = 60.0) -> OrthancServer:
        if shutil.which("Orthanc") is None:
            raise OrthancError("Orthanc is not installed (scripts/ci/install-apt.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = (self.workdir / "orthanc.log").open("ab")
        env = dicom_env()
        if self.config().get("SslEnabled"):
            shim = civetweb_ssl_shim(self.workdir / "sslshim")
            if shim is not None:
                env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(shim), env.get("LD_LIBRARY_PATH")]))
        self.process = subprocess.Popen(
            ["Orthanc", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        (self.workdir / "orthanc.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancError(f"Orthanc exited with {self.process.returncode}; see {log.name}")
            with contextlib.suppress(OSError, OrthancError):
                self.rest("GET", "/system")
                return self
            time.sleep(0.2)
        self.stop()
        raise OrthancError("Orthanc did not answer within the timeout")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        # Wait for the PID to go before anyone reuses the database ("database is locked").
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "orthanc.pid").unlink()

    def _auth_header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def rest(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        """Call Orthanc's REST API; JSON in and out (raw bytes in for uploads)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", self._auth_header())
        if raw is not None:
            request.add_header("Content-Type", "application/dicom")
        try:
            context = None if self.https_ca is None else ssl.create_default_context(cafile=str(self.https_ca))
            with urllib.request.urlopen(request, timeout=120, context=context) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise OrthancError(f"{method} {path}: HTTP {exc.code}") from exc
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            return payload

    def upload(self, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self.rest("POST", "/instances", raw=data)
        return result

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or update) a DICOM peer at run time."""
        self.modalities[name] = (aet, host, port)
        self.rest(
            "PUT",
            f"/modalities/{name}",
            {"AET": aet, "Host": host, "Port": port, "AllowEcho": True, "AllowStore": True},
        )

    def clear(self) -> None:
        """Delete every patient (tests share one Orthanc per session)."""
        for patient in self.rest("GET", "/patients") or []:
            self.rest("DELETE", f"/patients/{patient}")

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "dicomweb_url": self.dicomweb_url,
            "aet": self.aet,
            "host": "127.0.0.1",
            "dicom_port": self.dicom_port,
            "http_port": self.http_port,
            "user": self.user,
            "password": self.password,
            "pid": self.process.pid if self.process else None,
            "workdir": str(self.workdir),
            "viewer_url": f"{self.url}/ohif/" if self.viewer else None,
        }


def _stop_from_dir(workdir: Path, timeout: float = 30.0) -> None:
    pid_file = workdir / "orthanc.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="Orthanc's working directory")
    parser.add_argument("--aet", default="ORTHANC")
    parser.add_argument("--dicom-port", type=int, help="default: a free port")
    parser.add_argument("--http-port", type=int, help="default: a free port")
    parser.add_argument("--viewer", action="store_true", help="serve the OHIF Viewer under /ohif/")
    parser.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="NAME=AET@HOST:PORT",
        help="a DICOM peer Orthanc accepts and can send to",
    )
    args = parser.parse_args(argv)
    if args.action == "stop":
        _stop_from_dir(args.dir)
        return 0
    modalities: dict[str, tuple[str, str, int]] = {}
    for spec in args.modality:
        name, _, rest = spec.partition("=")
        aet, _, address = rest.partition("@")
        host, _, port = address.rpartition(":")
        modalities[name] = (aet, host, int(port))
    ports = {k: v for k, v in (("dicom_port", args.dicom_port), ("http_port", args.http_port)) if v}
    server = OrthancServer(args.dir, aet=args.aet, modalities=modalities, viewer=args.viewer, **ports)
    server.start()
    # Detach: the process outlives this script; `stop --dir` ends it.
    server.process = None
    print(json.dumps(server.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
