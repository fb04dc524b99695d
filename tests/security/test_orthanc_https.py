"""Attack: a network peer on the compose network reads (or a man in the middle alters) what
RadGate pulls from Orthanc's REST/DICOMweb port, which spoke plaintext HTTP (basic-auth
password and pixel data in the clear) while its DICOM port spoke TLS.

The real Orthanc binary runs with the HTTPS settings of the deployment, read from the files
themselves: the local stack's ``docker/peers/orthanc.json`` (``SslEnabled``, ``SslCertificate``,
``SslMinimumProtocolVersion``, DICOMweb ``Ssl``), its certificate file made by the line of
``docker/make-secrets.sh`` that makes it (certificate and key in one PEM, as Orthanc reads them)
from ``radgate certs dev``'s certificate for ``orthanc``. Then:

- a plaintext HTTP request gets no HTTP answer;
- RadGate's DICOMweb client (the gateway's pulls, ``imaging.gateway.pull.DicomwebSource``)
  configured from ``docker/config/gateway.yaml``'s PACS entry and trusting the CA the way compose
  makes it (``SSL_CERT_FILE`` in the gateway's environment, a mounted file) searches and
  retrieves over verified HTTPS;
- the same client without the CA refuses the server (no silent fallback to an unverified peer).

On the files before (HTTP, ``"Ssl": false``, ``http://orthanc:8042``) plaintext was answered and
the deployment's client spoke HTTP.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from governance.tls import issue_service_certificates, make_dev_certificates
from imaging.gateway.config import load_config
from imaging.gateway.pull import DicomwebSource, PullError
from tests.integration.conftest import orthanc_ci, write_ct_series

DOCKER = Path(__file__).resolve().parents[2] / "docker"
SSL_KEYS = ("SslEnabled", "SslCertificate", "SslMinimumProtocolVersion")


def _secrets(tmp_path: Path) -> Path:
    """``docker/secrets`` as make-secrets.sh leaves it, for TLS: the dev CA, Orthanc's certificate
    (``radgate certs dev --service orthanc``) and the HTTPS bundle made by make-secrets.sh's line."""
    secrets = tmp_path / "secrets"
    make_dev_certificates(secrets / "tls", names=("localhost", "127.0.0.1"))
    issue_service_certificates(secrets / "tls", ("orthanc",))
    script = (DOCKER / "make-secrets.sh").read_text()
    (line,) = [ln for ln in script.splitlines() if "orthanc-https-key.pem" in ln and not ln.startswith("#")]
    subprocess.run(["bash", "-euc", line], cwd=secrets, check=True)
    return secrets


def _deployed_https(secrets: Path) -> dict[str, Any]:
    """The HTTPS settings of the local stack's Orthanc, its secret paths mapped to this test's files
    (``/run/secrets/NAME`` -> compose's file for secret NAME)."""
    config = json.loads((DOCKER / "peers" / "orthanc.json").read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    files = {name: spec["file"] for name, spec in compose["secrets"].items()}

    def local(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("/run/secrets/"):
            return str(secrets.parent / files[value.removeprefix("/run/secrets/")].removeprefix("./"))
        return value

    settings = {key: local(config[key]) for key in SSL_KEYS if key in config}
    settings["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, **config["DicomWeb"]}
    return settings


@pytest.fixture
def https_orthanc(tmp_path: Path) -> Any:
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (scripts/ci/install-apt.sh)")
    secrets = _secrets(tmp_path)
    server = orthanc_ci.OrthancServer(
        tmp_path / "orthanc", extra_config=_deployed_https(secrets), https_ca=secrets / "tls" / "ca.pem"
    )
    server.start()
    try:
        yield server, secrets
    finally:
        server.stop()


def _gateway_peer(port: int) -> Any:
    """The PACS entry of docker/config/gateway.yaml, pointed at this test's Orthanc port (its host
    name, ``orthanc``, is what the certificate names: here ``localhost``, which it names too)."""
    peer = load_config(DOCKER / "config" / "gateway.yaml").peer("orthanc")
    assert peer.dicomweb_url is not None
    url = re.sub(r"^(\w+)://orthanc:8042", rf"\1://localhost:{port}", peer.dicomweb_url)
    return peer.model_copy(update={"dicomweb_url": url})


def _gateway_ca_env(secrets: Path) -> dict[str, str]:
    """The gateway's TLS trust settings from compose, each a mounted file mapped to this test's."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    mounted = {s["target"]: s["source"] for s in gateway["secrets"] if isinstance(s, dict)}
    files = {name: spec["file"] for name, spec in compose["secrets"].items()}
    path = gateway["environment"]["SSL_CERT_FILE"]
    return {"SSL_CERT_FILE": str(secrets.parent / files[mounted[path]].removeprefix("./"))}


def test_orthanc_answers_https_only_and_radgates_client_verifies_it(
    https_orthanc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    orthanc, secrets = https_orthanc
    (instance,) = write_ct_series(tmp_path / "ct", 1)
    uploaded = orthanc.upload(instance.read_bytes())
    study = orthanc.rest("GET", f"/studies/{uploaded['ParentStudy']}")["MainDicomTags"]["StudyInstanceUID"]

    # Plaintext: no HTTP answer on the port (only a TLS handshake is spoken there).
    with pytest.raises(httpx.HTTPError):
        httpx.get(
            f"http://127.0.0.1:{orthanc.http_port}/system", auth=(orthanc.user, orthanc.password), timeout=10
        )

    monkeypatch.setenv("RADGATE_PACS_ORTHANC_USER", orthanc.user)
    monkeypatch.setenv("RADGATE_PACS_ORTHANC_PASSWORD", orthanc.password)
    peer = _gateway_peer(orthanc.http_port)
    assert peer.dicomweb_url.startswith("https://")

    # Without the CA the deployment's client refuses the server.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    unverified = DicomwebSource(peer, timeout=20)
    with pytest.raises(PullError):
        unverified.search_studies({})
    unverified.close()

    # With the CA as compose gives it: search and retrieve over verified HTTPS.
    for name, value in _gateway_ca_env(secrets).items():
        monkeypatch.setenv(name, value)
    source = DicomwebSource(peer, timeout=60)
    try:
        assert source.search_studies({}) == [study]
        (ref,) = source.search_instances(study)
        assert source.retrieve(ref)[128:132] == b"DICM"
    finally:
        source.close()
