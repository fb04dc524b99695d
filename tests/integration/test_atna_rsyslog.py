"""ATNA export received by a real rsyslogd (Debian) on 127.0.0.1 over UDP, TCP and TLS: every audit
chain entry arrives as an RFC 5424 message whose MSG validates against the DICOM PS3.15 A.5.1.1
schema; a collector that is down loses nothing (the cursor waits, the backlog grows, all of it
arrives after the restart, in chain order)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.integration.conftest import load_script

rsyslog_ci = load_script("scripts/ci/rsyslog.py", "radgate_ci_rsyslog")

pytestmark = pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is not installed")


@dataclass(frozen=True)
class Certificates:
    ca_certificate: Path
    server_certificate: Path
    server_key: Path


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


def make_certificates(folder: Path) -> Certificates:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    folder.mkdir(parents=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    server, server_key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    san = folder / "san.cnf"
    san.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -keyout {ca_key} -out {ca} -subj /CN=RadGate-test-CA -days 1",
        f"req -newkey rsa:2048 -nodes -keyout {server_key} -out {request} -subj /CN=127.0.0.1",
        f"x509 -req -in {request} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {server} -days 1"
        f" -extfile {san}",
    ):
        subprocess.run(["openssl", *command.split()], check=True, capture_output=True, timeout=60)
    return Certificates(ca, server, server_key)


@pytest.fixture
def collector(tmp_path: Path, certificates: Certificates) -> Iterator[Any]:
    server = rsyslog_ci.RsyslogServer(
        tmp_path / "rsyslog",
        ca_file=certificates.ca_certificate,
        certificate=certificates.server_certificate,
        private_key=certificates.server_key,
    ).start()
    yield server
    server.stop()


def _received(server: Any, count: int, timeout_s: float = 15.0) -> list[tuple[str, str, str, bytes]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [line for line in server.lines() if line.startswith("DICOM+RFC3881|")]
        if len(lines) >= count:
            break
        time.sleep(0.1)
    out = []
    for line in lines:
        msgid, app, pri, msg = line.split("|", 3)
        out.append((msgid, app, pri, msg.encode("utf-8")))
    return out


def _seq(xml: bytes) -> int:
    root = etree.fromstring(xml)
    (detail,) = root.xpath("//ParticipantObjectDetail[@type='radgate-audit-seq']")
    return int(base64.b64decode(detail.get("value")))


def _record_events() -> None:
    from governance.audit import record

    record("alice", "ui.login", "user:alice", {"status": 200}, role="clinical-reviewer")
    record("alice", "serve.predict", "model:chest-opacity/3", {"n": 1}, role="clinical-reviewer")
    record("bob", "model.promote", "model:chest-opacity/3", {"alias": "production"}, role="ml-engineer")
    record("carol", "deid.run", "dataset:chest/1", {"n": 20}, role="data-steward")
    record("dave", "results.export", "study:2.25.1", {"objects": 2}, role="pacs-client")
    record("anonymous", "serve.auth.denied", "route:/v1/models", {"status": 401})


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_every_chain_entry_reaches_rsyslog_as_valid_dicom_audit_xml(
    transport: str, collector: Any, certificates: Certificates
) -> None:
    from governance.audit.atna import AtnaProfile, SyslogDestination, syslog_exporter, validate_message

    _record_events()
    port = {"udp": collector.udp_port, "tcp": collector.tcp_port, "tls": collector.tls_port}[transport]
    destination = SyslogDestination(
        transport,  # type: ignore[arg-type]
        "127.0.0.1",
        port,
        ca_file=certificates.ca_certificate if transport == "tls" else None,
    )
    exporter = syslog_exporter(destination, AtnaProfile(source_id="radgate-test", enterprise_site="site-1"))
    report = exporter.pump()
    assert report.error is None and report.sent == 6 and report.backlog == 0
    messages = _received(collector, 6)
    assert len(messages) == 6
    codes = []
    for msgid, app, pri, msg in messages:
        assert (msgid, app, pri) == ("DICOM+RFC3881", "radgate", "85")  # authpriv.notice
        xml = msg.removeprefix("\ufeff".encode())
        validate_message(xml)  # PS3.15 A.5.1.1 schema
        root = etree.fromstring(xml)
        codes.append(root.find("EventIdentification/EventID").get("csd-code"))
        assert root.find("AuditSourceIdentification").get("AuditSourceID") == "radgate-test"
    assert [_seq(m[3].removeprefix("\ufeff".encode())) for m in messages] == [1, 2, 3, 4, 5, 6]
    # login, instances accessed, security alert (software configuration), import, export, login failed
    assert codes == ["110114", "110103", "110113", "110107", "110106", "110114"]
    denied = etree.fromstring(messages[5][3].removeprefix("\ufeff".encode()))
    assert denied.find("EventIdentification").get("EventOutcomeIndicator") == "4"


def test_collector_down_loses_nothing(tmp_path: Path) -> None:
    from governance.audit import record
    from governance.audit.atna import SyslogDestination, syslog_exporter

    server = rsyslog_ci.RsyslogServer(tmp_path / "rsyslog-late")
    destination = SyslogDestination("tcp", "127.0.0.1", server.tcp_port, timeout_s=1.0)
    exporter = syslog_exporter(destination)
    for index in range(5):
        record("alice", "serve.predict", f"model:m/{index}", {"n": 1})
    down = exporter.pump()
    assert down.sent == 0 and down.backlog == 5 and down.error is not None
    server.start()
    try:
        record("alice", "ui.logout", "user:alice", {})
        up = exporter.pump()
        assert up.error is None and up.sent == 6 and up.backlog == 0
        messages = _received(server, 6)
        assert [_seq(m[3].removeprefix("\ufeff".encode())) for m in messages] == [1, 2, 3, 4, 5, 6]
        # The collector restarts: the kept connection is found closed and re-opened, nothing lost.
        server.stop()
        record("alice", "serve.predict", "model:m/9", {"n": 1})
        assert exporter.pump().backlog == 1
        server.start()
        assert exporter.pump().backlog == 0
        assert [_seq(m[3].removeprefix("\ufeff".encode())) for m in _received(server, 7)][-1] == 7
    finally:
        server.stop()


def test_radgate_audit_forward_cli(collector: Any, as_role: Any) -> None:
    """``radgate audit forward`` (auditor): sends what is queued, says so in JSON, exits 1 when the
    repository is unreachable and keeps the entries for the next run."""
    import json
    import os
    import sys

    from governance.audit import record

    token = as_role("auditor")
    record("alice", "ui.view.case", "case:demo", {}, role="clinical-reviewer")
    command = [sys.executable, "-m", "radgate", "audit", "forward"]
    env = {**os.environ, "RADGATE_TOKEN": token}
    down = subprocess.run(
        [*command, "--syslog", "tcp://127.0.0.1:9"], env=env, capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 1, down.stderr
    queued = json.loads(down.stdout.splitlines()[-1])
    assert queued["sent"] == 0 and queued["backlog"] >= 2 and queued["error"]
    up = subprocess.run(
        [*command, "--syslog", f"tcp://127.0.0.1:{collector.tcp_port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout.splitlines()[-1])
    assert report["error"] is None and report["backlog"] == 0 and report["sent"] >= 2
    messages = _received(collector, report["sent"])
    assert any(b"ui.view.case" in m[3] for m in messages)
    refused = subprocess.run(
        [*command, "--syslog", f"tcp://127.0.0.1:{collector.tcp_port}"],
        env={**os.environ, "RADGATE_TOKEN": as_role("clinical-reviewer")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0  # auditors and admins only
