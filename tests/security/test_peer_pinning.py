"""Per-peer certificates on the gateway's DICOM TLS listener, against a real ``radgate gateway``
over real sockets, with two development CAs made by ``radgate certs dev``'s code.

The listener trusts both CAs (CA A issued its own certificate and STORESCU's; CA B is the PACS's
own PKI). ORTHANC is pinned to CA B, STORESCU to its one certificate from CA A. An attacker who
holds some other certificate the listener trusts calls under an allowed AE title:

- a CA A certificate calling as ORTHANC (a certificate from another CA than that peer's);
- CA A's other certificate calling as STORESCU (another certificate from the same CA).

Both are rejected with an A-ASSOCIATE-RJ before any data set is sent, audited with the shown
certificate's fingerprint and nothing else; the rightful peers still store, including Orthanc
with DICOM TLS and its own CA's certificate.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydicom import dcmread
from sqlalchemy import func, select

from governance.catalog import Instance, open_catalog
from governance.tls import DevCertificates, client_context, make_dev_certificates
from tests.integration.conftest import gateway_config, orthanc_ci, write_ct_series

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevCertificates, DevCertificates]:
    """Two independent CAs with the same names (two runs of ``radgate certs dev``): only their
    keys tell them apart."""
    base = tmp_path_factory.mktemp("pinning")
    return make_dev_certificates(base / "ca-a"), make_dev_certificates(base / "ca-b")


def _sha256(pem: Path) -> str:
    import hashlib

    return hashlib.sha256(
        x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)
    ).hexdigest()


def _pinned_config(a: DevCertificates, b: DevCertificates) -> dict[str, Any]:
    config = gateway_config(http={"enabled": False})
    config["dicom"].update(
        acse_timeout=10,
        tls={
            "certificate": str(a.server_certificate),
            "private_key": str(a.server_key),
            "ca_file": str(a.ca_certificate),
            "require_client_certificate": True,
        },
        allowed_peers=[
            {"ae_title": "ORTHANC", "hosts": ["127.0.0.1"], "tls": {"ca_file": str(b.ca_certificate)}},
            {
                "ae_title": "STORESCU",
                "hosts": ["127.0.0.1"],
                "tls": {"certificate_sha256": [_sha256(a.client_certificate)]},
            },
        ],
    )
    return config


def _associate(port: int, aet: str, context: ssl.SSLContext, files: list[Path]) -> tuple[Any, list[int]]:
    """(the association's result, C-STORE statuses): result None when it was established."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADGATE", tls_args=(context, "localhost"))
    if not assoc.is_established:
        return ("rejected" if assoc.is_rejected else "failed"), []
    try:
        return None, [int(assoc.send_c_store(dcmread(path)).Status) for path in files]
    finally:
        assoc.release()


def _stored() -> int:
    with open_catalog().session() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_a_trusted_certificate_that_is_not_the_peers_own_is_rejected(
    start_gateway: Any, cas: tuple[DevCertificates, DevCertificates], tmp_path: Path
) -> None:
    from governance.audit import AuditLog

    a, b = cas
    gateway = start_gateway(_pinned_config(a, b))
    files = write_ct_series(tmp_path / "ct", 2, patient_name="Pinning^Patient")

    # Another CA's certificate (CA A, which the listener trusts) under ORTHANC's AE title.
    other_ca = client_context(a.ca_certificate, a.client_certificate, a.client_key)
    assert _associate(gateway.dicom_port, "ORTHANC", other_ca, files) == ("rejected", [])
    # Another certificate of the pinned peer's own CA under STORESCU's AE title.
    same_ca = client_context(a.ca_certificate, a.server_certificate, a.server_key)
    assert _associate(gateway.dicom_port, "STORESCU", same_ca, files) == ("rejected", [])
    assert _stored() == 0

    # The rightful peers: ORTHANC with CA B's certificate, STORESCU with its pinned one.
    own_ca = client_context(a.ca_certificate, b.client_certificate, b.client_key)
    assert _associate(gateway.dicom_port, "ORTHANC", own_ca, files[:1]) == (None, [0])
    pinned = client_context(a.ca_certificate, a.client_certificate, a.client_key)
    assert _associate(gateway.dicom_port, "STORESCU", pinned, files[1:]) == (None, [0])
    assert _stored() == 2

    final = gateway.terminate()
    assert final["rejected_associations"] == 2
    rejected = list(AuditLog().entries(action="gateway.association-rejected"))
    assert [(e.actor, e.details["reason"]) for e in rejected] == [
        ("ae:ORTHANC", "peer-certificate"),
        ("ae:STORESCU", "peer-certificate"),
    ]
    assert [e.details["certificate_sha256"] for e in rejected] == [
        _sha256(a.client_certificate),
        _sha256(a.server_certificate),
    ]
    log = gateway.config_path.with_suffix(".log").read_text()
    assert "did not show its own certificate" in log
    assert "Pinning" not in log  # no PHI of the instances the rejected callers held


def test_orthanc_with_its_own_ca_stores_over_pinned_tls(
    start_gateway: Any, cas: tuple[DevCertificates, DevCertificates], tmp_path: Path
) -> None:
    """Orthanc with DICOM TLS and a certificate of CA B (pinned for ORTHANC) sends a study."""
    import shutil

    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (scripts/ci/install-apt.sh)")
    a, b = cas
    gateway = start_gateway(_pinned_config(a, b))
    orthanc = orthanc_ci.OrthancServer(
        tmp_path / "orthanc",
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(b.server_certificate),
            "DicomTlsPrivateKey": str(b.server_key),
            "DicomTlsTrustedCertificates": str(a.ca_certificate),  # the gateway's CA
            "DicomTlsRemoteCertificateRequired": True,
            "DicomModalities": {
                "radgate": {
                    "AET": "RADGATE",
                    "Host": "127.0.0.1",
                    "Port": gateway.dicom_port,
                    "UseDicomTls": True,
                }
            },
        },
    )
    assert orthanc.aet == "ORTHANC"
    orthanc.start()
    try:
        for path in write_ct_series(tmp_path / "to-gateway", 2):
            orthanc.upload(path.read_bytes())
        study = orthanc.rest("GET", "/studies")[0]
        orthanc.rest("POST", "/modalities/radgate/store", {"Resources": [study], "Synchronous": True})
        assert _stored() == 2
    finally:
        orthanc.stop()
    assert gateway.terminate()["rejected_associations"] == 0


def test_the_compose_gateway_admits_only_orthancs_own_certificate_as_orthanc(
    start_gateway: Any, tmp_path: Path
) -> None:
    """docker/compose.yaml's gateway (docker/config/gateway.yaml, the files compose mounts): every
    service of the stack holds a certificate of the one CA that make-secrets.sh makes, so without
    a pin a broken-into service (serving, here) could call as ORTHANC and store. Pinned to
    Orthanc's certificate (mounted at /run/radgate-tls/peers/orthanc.pem), it is refused; Orthanc's
    own certificate stores."""
    import yaml

    from governance.tls import issue_service_certificates

    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    stack = make_dev_certificates(tmp_path / "tls")
    issue_service_certificates(tmp_path / "tls", ("gateway", "orthanc", "serving"))
    files = {name: spec["file"] for name, spec in compose["secrets"].items()}
    mounted = {
        secret["target"]: str(tmp_path / "tls" / Path(files[secret["source"]]).name)
        for secret in compose["services"]["gateway"]["secrets"]
        if isinstance(secret, dict) and secret["target"].startswith("/run/radgate-tls/")
    }
    text = (DOCKER / "config" / "gateway.yaml").read_text()
    for target, local in sorted(mounted.items(), key=lambda item: -len(item[0])):
        text = text.replace(target, local)
    dicom = yaml.safe_load(text)["dicom"]
    dicom.update(host="127.0.0.1", port=0, acse_timeout=10)
    for peer in dicom["allowed_peers"]:
        peer["hosts"] = ["127.0.0.1"]  # the compose network's subnet, here the loopback
    config = gateway_config(http={"enabled": False})
    config["dicom"] = dicom
    gateway = start_gateway(config)
    files_to_send = write_ct_series(tmp_path / "ct", 2)
    tls = tmp_path / "tls"

    serving = client_context(stack.ca_certificate, tls / "serving.pem", tls / "serving-key.pem")
    assert _associate(gateway.dicom_port, "ORTHANC", serving, files_to_send) == ("rejected", [])
    assert _stored() == 0
    orthanc = client_context(stack.ca_certificate, tls / "orthanc.pem", tls / "orthanc-key.pem")
    assert _associate(gateway.dicom_port, "ORTHANC", orthanc, files_to_send) == (None, [0, 0])
    # The compose gateway acknowledges once the input is in its receive spool (acknowledge:
    # received); its drainer commits it after.
    deadline = time.monotonic() + 120
    while _stored() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _stored() == 2
    final = gateway.terminate()
    assert final["rejected_associations"] == 1 and final["spooled"] == 2
