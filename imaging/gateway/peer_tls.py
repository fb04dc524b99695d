"""Which certificate each allowed peer AE must present over DICOM TLS.

The TLS handshake cannot know the calling AE title (it comes later, in the A-ASSOCIATE-RQ), so
the check is split in two. The handshake verifies the peer's chain against every CA the
listener trusts: ``dicom.tls.ca_file`` and each peer's own ``tls.ca_file`` together. Once the
A-ASSOCIATE-RQ names the calling AE, ``PeerAdmission`` checks that the chain OpenSSL verified
goes through that peer's own CA and/or that the certificate is one pinned for it; otherwise
the association is rejected (A-ASSOCIATE-RJ). Without this a certificate from any trusted CA,
or any certificate of a shared CA, could call under any allowed AE title.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from governance.tls import TlsConfigError
from imaging.gateway.config import AllowedPeer, DicomListener

__all__ = [
    "PeerAdmission",
    "PeerRefusal",
    "certificate_sha256",
    "listener_context",
]


def certificate_sha256(der: bytes) -> str:
    """The fingerprint ``certificate_sha256`` pins: SHA-256 of the DER certificate, hex."""
    return hashlib.sha256(der).hexdigest()


def _ca_certificates(path: Path, what: str = "peer CA file") -> frozenset[bytes]:
    """The DER encodings of the certificates in a PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsConfigError(f"{what} {path} cannot be read as PEM certificates") from exc
    return frozenset(cert.public_bytes(Encoding.DER) for cert in certificates)


def listener_context(listener: DicomListener) -> ssl.SSLContext | None:
    """The SCP's TLS context: its own CA file plus every peer's CA file are trusted in the
    handshake, and a client certificate is asked for (optional unless the listener requires
    one) as soon as any CA is known."""
    if listener.tls is None:
        return None
    context = listener.tls.context()
    peer_cas = [peer.tls.ca_file for peer in listener.allowed_peers if peer.tls and peer.tls.ca_file]
    try:
        for ca_file in peer_cas:
            context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError("a peer CA file cannot be used") from exc
    if peer_cas and context.verify_mode == ssl.CERT_NONE:
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


@dataclass(frozen=True)
class PeerRefusal:
    """Why an association was refused; only AE titles, addresses and fingerprints (no PHI)."""

    reason: str  # "calling-ae" | "peer-certificate"
    certificate_sha256: str = ""  # of the certificate shown, if any


@dataclass(frozen=True)
class _Pin:
    peer: AllowedPeer
    cas: frozenset[bytes]
    fingerprints: frozenset[str]

    def accepts(self, chain: tuple[bytes, ...]) -> bool:
        if not chain:
            return False
        if self.fingerprints and certificate_sha256(chain[0]) not in self.fingerprints:
            return False
        # Every link of the chain was verified by the handshake: the peer's CA must be one.
        return not self.cas or any(cert in self.cas for cert in chain)


class PeerAdmission:
    """The allow-list decision for one association: the calling AE title and address, and the
    certificate chain when the listener speaks TLS. CA files are read once, at start."""

    def __init__(self, listener: DicomListener) -> None:
        self.listener = listener
        self._pins: dict[int, _Pin] = {}
        for index, peer in enumerate(listener.allowed_peers):
            if peer.tls is not None:
                cas = _ca_certificates(peer.tls.ca_file) if peer.tls.ca_file else frozenset()
                pinned = set(peer.tls.certificate_sha256)
                for path in peer.tls.certificate_file:  # the peer's certificate, mounted
                    pinned.update(map(certificate_sha256, _ca_certificates(path, "pinned certificate")))
                self._pins[index] = _Pin(peer, cas, frozenset(pinned))

    def refusal(self, ae_title: str, host: str, chain: tuple[bytes, ...]) -> PeerRefusal | None:
        """None to admit. An entry without ``tls`` admits any certificate the handshake
        accepted; the entries with ``tls`` that match the AE title and address admit only
        their own."""
        listener = self.listener
        if not listener.permits(ae_title, host):
            return PeerRefusal("calling-ae")
        entries = [i for i, peer in enumerate(listener.allowed_peers) if peer.permits(ae_title, host)]
        if not entries or any(i not in self._pins for i in entries):
            return None  # allowed by allow_any (never for a pinned title) or by an unpinned entry
        if any(self._pins[i].accepts(chain) for i in entries):
            return None
        return PeerRefusal("peer-certificate", certificate_sha256(chain[0]) if chain else "")
