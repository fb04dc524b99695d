"""A private rsyslogd on 127.0.0.1 for tests: the audit repository ATNA export sends to.

``RsyslogServer(workdir).start()`` runs Debian's ``rsyslogd -n`` with its own config: UDP, TCP
(octet-counted framing accepted) and, when certificates are given, TLS (RFC 5425, gtls driver,
x509/certvalid client authentication optional) inputs on free ports, and one file that receives
each message as ``MSGID|APP-NAME|PRI|MSG`` (raw MSG, BOM kept) per line. Never the system service.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class RsyslogError(RuntimeError):
    """rsyslogd could not be started."""


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RsyslogServer:
    workdir: Path
    udp_port: int = field(default_factory=lambda: _free_port(socket.SOCK_DGRAM))
    tcp_port: int = field(default_factory=_free_port)
    tls_port: int = field(default_factory=_free_port)
    ca_file: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def received(self) -> Path:
        return self.workdir / "received.log"

    def _config(self) -> str:
        tls = self.certificate is not None
        lines = [
            f'global(workDirectory="{self.workdir}" maxMessageSize="64k"'
            + (
                f' defaultNetstreamDriverCAFile="{self.ca_file}"'
                f' defaultNetstreamDriverCertFile="{self.certificate}"'
                f' defaultNetstreamDriverKeyFile="{self.private_key}"'
                if tls
                else ""
            )
            + ")",
            'module(load="imudp")',
            f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="audit")',
            'module(load="imtcp" maxSessions="50")',
            f'input(type="imtcp" address="127.0.0.1" port="{self.tcp_port}" ruleset="audit")',
        ]
        if tls:
            lines.append(
                f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="audit"'
                ' streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")'
            )
        lines += [
            'template(name="audit" type="string" string="%msgid%|%app-name%|%pri%|%msg%\\n")',
            'ruleset(name="audit") {',
            f'  action(type="omfile" file="{self.received}" template="audit"'
            ' flushOnTXEnd="on" asyncWriting="off")',
            "}",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 20.0) -> RsyslogServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "rsyslog.conf"
        config.write_text(self._config())
        check = subprocess.run(
            ["rsyslogd", "-N1", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RsyslogError(f"rsyslogd rejected its config: {check.stderr[-800:]}")
        log = open(self.workdir / "rsyslogd.out", "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(config), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        ports = [self.tcp_port] + ([self.tls_port] if self.certificate else [])
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RsyslogError(f"rsyslogd exited: {(self.workdir / 'rsyslogd.out').read_text()[-800:]}")
            if all(_listening(port) for port in ports):
                return self
            time.sleep(0.1)
        self.stop()
        raise RsyslogError("rsyslogd did not open its ports in time")

    def lines(self) -> list[str]:
        if not self.received.exists():
            return []
        return self.received.read_text(encoding="utf-8", errors="replace").splitlines()

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


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
