"""The allow-list decision with per-peer certificates (``imaging.gateway.peer_tls``), on real
certificates of two development CAs; the socket-level attack is tests/security/test_peer_pinning.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError

from governance.tls import DevCertificates, make_dev_certificates
from imaging.gateway.config import DicomListener
from imaging.gateway.peer_tls import PeerAdmission, certificate_sha256, listener_context


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevCertificates, DevCertificates]:
    base = tmp_path_factory.mktemp("peer-tls")
    return make_dev_certificates(base / "a"), make_dev_certificates(base / "b")


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def _chain(certs: DevCertificates, leaf: Path) -> tuple[bytes, ...]:
    """What the handshake reports for a leaf of ``certs``' CA: leaf, then the CA."""
    return _der(leaf), _der(certs.ca_certificate)


def _listener(a: DevCertificates, b: DevCertificates, **dicom: object) -> DicomListener:
    return DicomListener.model_validate(
        {
            "tls": {"certificate": a.server_certificate, "private_key": a.server_key},
            "allowed_peers": [
                {"ae_title": "PACS", "tls": {"ca_file": b.ca_certificate}},
                {
                    "ae_title": "MODALITY",
                    "hosts": ["127.0.0.1"],
                    "tls": {
                        "ca_file": a.ca_certificate,
                        "certificate_sha256": [certificate_sha256(_der(a.client_certificate)).upper()],
                    },
                },
                {"ae_title": "LEGACY"},
            ],
            **dicom,
        }
    )


def test_each_pinned_peer_admits_only_its_own_certificate(
    cas: tuple[DevCertificates, DevCertificates],
) -> None:
    a, b = cas
    admission = PeerAdmission(_listener(a, b))
    assert admission.refusal("PACS", "10.0.0.1", _chain(b, b.client_certificate)) is None
    assert admission.refusal("MODALITY", "127.0.0.1", _chain(a, a.client_certificate)) is None

    foreign = admission.refusal("PACS", "10.0.0.1", _chain(a, a.client_certificate))
    assert foreign is not None and foreign.reason == "peer-certificate"
    assert foreign.certificate_sha256 == certificate_sha256(_der(a.client_certificate))
    sibling = admission.refusal("MODALITY", "127.0.0.1", _chain(a, a.server_certificate))
    assert sibling is not None and sibling.reason == "peer-certificate"
    # The pinned fingerprint alone is not enough when the peer's CA is named too.
    assert admission.refusal("MODALITY", "127.0.0.1", (_der(a.client_certificate), _der(b.ca_certificate)))
    nothing = admission.refusal("PACS", "10.0.0.1", ())
    assert nothing is not None and (nothing.reason, nothing.certificate_sha256) == ("peer-certificate", "")

    # Unpinned entries keep accepting whatever the handshake accepted; unknown titles are not peers.
    assert admission.refusal("LEGACY", "10.0.0.1", ()) is None
    unknown = admission.refusal("OTHER", "10.0.0.1", _chain(b, b.client_certificate))
    assert unknown is not None and unknown.reason == "calling-ae"
    assert admission.refusal("MODALITY", "10.0.0.9", _chain(a, a.client_certificate)).reason == "calling-ae"  # type: ignore[union-attr]


def test_allow_any_does_not_open_a_pinned_title(cas: tuple[DevCertificates, DevCertificates]) -> None:
    a, b = cas
    admission = PeerAdmission(_listener(a, b, allow_any=True))
    assert admission.refusal("ANYONE", "10.0.0.1", ()) is None
    # MODALITY is pinned for 127.0.0.1; from elsewhere allow_any must not let it in.
    elsewhere = admission.refusal("MODALITY", "10.0.0.9", _chain(a, a.server_certificate))
    assert elsewhere is not None and elsewhere.reason == "calling-ae"
    assert admission.refusal("PACS", "10.0.0.1", _chain(a, a.client_certificate)) is not None


def test_the_handshake_trusts_every_peer_ca_and_asks_for_a_certificate(
    cas: tuple[DevCertificates, DevCertificates],
) -> None:
    a, b = cas
    context = listener_context(_listener(a, b))
    assert context is not None
    assert context.verify_mode == ssl.CERT_OPTIONAL  # the listener alone names no CA
    trusted = {bytes(cert) for cert in context.get_ca_certs(binary_form=True)}
    assert trusted == {_der(a.ca_certificate), _der(b.ca_certificate)}


def test_peer_certificates_need_tls_and_a_ca(cas: tuple[DevCertificates, DevCertificates]) -> None:
    a, b = cas
    with pytest.raises(ValidationError, match=r"needs dicom\.tls"):
        DicomListener.model_validate(
            {"allowed_peers": [{"ae_title": "PACS", "tls": {"ca_file": b.ca_certificate}}]}
        )
    fingerprint = certificate_sha256(_der(a.client_certificate))
    with pytest.raises(ValidationError, match="needs a CA that issued it"):
        DicomListener.model_validate(
            {
                "tls": {"certificate": a.server_certificate, "private_key": a.server_key},
                "allowed_peers": [{"ae_title": "PACS", "tls": {"certificate_sha256": [fingerprint]}}],
            }
        )
    with pytest.raises(ValidationError, match="64 hex digits"):
        DicomListener.model_validate(
            {
                "tls": {
                    "certificate": a.server_certificate,
                    "private_key": a.server_key,
                    "ca_file": a.ca_certificate,
                },
                "allowed_peers": [{"ae_title": "PACS", "tls": {"certificate_sha256": ["abcd"]}}],
            }
        )
    with pytest.raises(ValidationError, match="ca_file and/or certificate_sha256"):
        DicomListener.model_validate(
            {
                "tls": {"certificate": a.server_certificate, "private_key": a.server_key},
                "allowed_peers": [{"ae_title": "PACS", "tls": {}}],
            }
        )
