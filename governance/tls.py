"""TLS for RadGate's listeners and clients: one place that builds every ``ssl.SSLContext``, with
the settings of the DICOM BCP 195 TLS profile (PS3.15 B.9, RFC 9325): TLS 1.2 or newer, forward
secret AEAD cipher suites only, no compression, no renegotiation; and a development CA
(``radgate certs dev``) that makes the certificates the demo and the tests use.

The same context serves DICOM TLS (the gateway's SCP wraps accepted sockets with it; pynetdicom's
``tls_args`` for outgoing associations) and HTTPS (uvicorn), so both speak the same profile.
Private keys are written 0600 and never logged.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from governance.strict import StrictModel

__all__ = [
    "BCP195_CIPHERS",
    "HSTS_VALUE",
    "ClientTls",
    "DevCertificates",
    "ServerTls",
    "TlsConfigError",
    "TransportSecurity",
    "client_context",
    "issue_service_certificates",
    "make_dev_certificates",
    "server_context",
]

# TLS 1.2 suites of BCP 195 (ECDHE with AES-GCM or ChaCha20-Poly1305); TLS 1.3 suites are all
# AEAD and forward secret and are kept as OpenSSL sets them.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!MD5"


class TlsConfigError(ValueError):
    """A TLS setting names a file that is missing or does not hold what it should."""


class ServerTls(StrictModel):
    """TLS of a listener. ``ca_file`` and ``require_client_certificate`` make it mutual TLS:
    a peer must then show a certificate issued by a CA in ``ca_file``."""

    certificate: Path = Field(description="PEM certificate chain of this server")
    private_key: Path = Field(description="PEM private key (file mode 0600)")
    ca_file: Path | None = Field(default=None, description="PEM CAs whose client certificates are trusted")
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _mutual_needs_ca(self) -> ServerTls:
        if self.require_client_certificate and self.ca_file is None:
            raise ValueError("require_client_certificate needs ca_file (the CAs of the peers)")
        return self

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn's TLS settings for this listener (it builds its own context from them)."""
        options: dict[str, Any] = {
            "ssl_certfile": str(self.certificate),
            "ssl_keyfile": str(self.private_key),
            "ssl_ciphers": BCP195_CIPHERS,
        }
        if self.ca_file is not None:
            options["ssl_ca_certs"] = str(self.ca_file)
            options["ssl_cert_reqs"] = (
                ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
            )
        return options

    def context(self) -> ssl.SSLContext:
        return server_context(
            self.certificate,
            self.private_key,
            self.ca_file,
            require_client_certificate=self.require_client_certificate,
        )


class ClientTls(StrictModel):
    """TLS towards one peer: the CA that issued the peer's certificate (``ca_file``), and this
    side's certificate when the peer asks for one (mutual TLS)."""

    ca_file: Path = Field(description="PEM CA(s) that issued the peer's certificate")
    certificate: Path | None = None
    private_key: Path | None = None
    server_name: str | None = Field(default=None, description="name to check in the peer's certificate")
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self

    def context(self) -> ssl.SSLContext:
        return client_context(
            self.ca_file, self.certificate, self.private_key, check_hostname=self.check_hostname
        )


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _readable(path: Path, what: str) -> Path:
    if not path.is_file():
        raise TlsConfigError(f"TLS {what} {path} does not exist")
    return path


def server_context(
    certificate: Path,
    private_key: Path,
    ca_file: Path | None = None,
    *,
    require_client_certificate: bool = False,
) -> ssl.SSLContext:
    """A server-side context; with ``ca_file``, client certificates from those CAs are verified
    (required when ``require_client_certificate``, else optional)."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(_readable(certificate, "certificate"), _readable(private_key, "private key"))
        if ca_file is not None:
            context.load_verify_locations(cafile=_readable(ca_file, "CA file"))
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS certificate or key cannot be used: {exc.reason}") from exc
    if ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    elif require_client_certificate:
        raise TlsConfigError("a client certificate can only be required with a CA file")
    context.options |= ssl.OP_SINGLE_ECDH_USE
    return context


def client_context(
    ca_file: Path,
    certificate: Path | None = None,
    private_key: Path | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client-side context that trusts only ``ca_file`` (not the system store: a PACS or a
    RadGate service is vouched for by the CA its operator names), with this side's certificate
    for mutual TLS."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=_readable(ca_file, "CA file"))
        if certificate is not None:
            if private_key is None:
                raise TlsConfigError("a client certificate needs its private key")
            context.load_cert_chain(
                _readable(certificate, "certificate"), _readable(private_key, "private key")
            )
    except ssl.SSLError as exc:
        raise TlsConfigError(f"TLS certificate or key cannot be used: {exc.reason}") from exc
    return context


# -- the development CA -----------------------------------------------------------------------


@dataclass(frozen=True)
class DevCertificates:
    """What ``make_dev_certificates`` wrote (PEM files)."""

    directory: Path
    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path
    client_certificate: Path
    client_key: Path

    def as_dict(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.__dataclass_fields__}


def _write_private(path: Path, data: bytes) -> None:
    """Create with mode 0600 from the start (no window where the key is world readable)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _dev_name(common: str, organization: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _dev_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    # RSA: the BCP 195 suites DICOM peers (dcmtk, Orthanc) implement are ECDHE_RSA.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _alt_names(names: tuple[str, ...]) -> list[Any]:
    from cryptography import x509

    alt_names: list[x509.GeneralName] = []
    for entry in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            alt_names.append(x509.DNSName(entry))
    return alt_names


def _issue_leaf(
    ca_cert: Any, ca_key: Any, common: str, *, client_only: bool, names: tuple[str, ...], days: int
) -> tuple[bytes, bytes]:
    """A leaf certificate (PEM) and its key (PEM, PKCS8) issued by the dev CA: for TLS servers
    (also valid as clients: a DICOM AE both accepts and initiates associations) or clients only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if not client_only:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    organization = ca_cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)[0].value
    leaf_key = _dev_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_dev_name(common, str(organization)))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_dev_certificates(
    directory: Path,
    *,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    days: int = 365,
    organization: str = "RadGate development CA",
) -> DevCertificates:
    """A local CA, a server certificate for ``names`` (DNS names and IP addresses; it is also
    valid as a client certificate, since a DICOM AE both accepts and initiates associations)
    and a client certificate, as PEM files under ``directory``. For demos and tests only: a
    hospital deployment uses certificates from its own PKI."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = _dev_key()
    ca_name = _dev_name("RadGate dev root CA", organization)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_pem, server_key_pem = _issue_leaf(
        ca_cert, ca_key, names[0] if names else "radgate", client_only=False, names=names, days=days
    )
    client_pem, client_key_pem = _issue_leaf(
        ca_cert, ca_key, "radgate-client", client_only=True, names=(), days=days
    )

    paths = DevCertificates(
        directory=directory,
        ca_certificate=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_certificate=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )
    paths.ca_certificate.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        paths.ca_key,
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    paths.server_certificate.write_bytes(server_pem)
    _write_private(paths.server_key, server_key_pem)
    paths.client_certificate.write_bytes(client_pem)
    _write_private(paths.client_key, client_key_pem)
    return paths


def issue_service_certificates(
    directory: Path, services: tuple[str, ...], *, days: int = 365, extra_names: tuple[str, ...] = ()
) -> dict[str, tuple[Path, Path]]:
    """With the dev CA in ``directory`` (``make_dev_certificates``): one certificate per service
    that has none yet, ``SERVICE.pem`` and ``SERVICE-key.pem``, for the DNS name SERVICE (its
    name on a compose network or in a cluster), ``localhost`` and ``127.0.0.1`` (and
    ``extra_names``: DNS names or IP addresses, e.g. the addresses Ray's nodes dial each other
    at), valid for server and client use. Each service then holds its own TLS key, not one
    shared by all. Returns every named service's (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate(_readable(directory / "ca.pem", "CA certificate").read_bytes())
    ca_key: Any = None
    made: dict[str, tuple[Path, Path]] = {}
    for service in services:
        if not service or "/" in service or service.startswith("."):
            raise TlsConfigError(f"not a service name: {service!r}")
        certificate, key = directory / f"{service}.pem", directory / f"{service}-key.pem"
        if not (certificate.exists() and key.exists()):
            if ca_key is None:
                ca_key = serialization.load_pem_private_key(
                    _readable(directory / "ca-key.pem", "CA key").read_bytes(), password=None
                )
            pem, key_pem = _issue_leaf(
                ca_cert,
                ca_key,
                service,
                client_only=False,
                names=tuple(dict.fromkeys((service, "localhost", "127.0.0.1", *extra_names))),
                days=days,
            )
            _write_private(key, key_pem)
            certificate.write_bytes(pem)
        made[service] = (certificate, key)
    return made


# -- HTTPS responses ---------------------------------------------------------------------------

HSTS_VALUE = b"max-age=31536000; includeSubDomains"


class TransportSecurity:
    """ASGI middleware for an app served over HTTPS: every response carries
    Strict-Transport-Security (browsers then refuse plaintext to this host), and every cookie it
    sets is marked Secure (never sent over plaintext). Requests that arrived over plaintext pass
    unchanged (HSTS over HTTP is ignored by browsers anyway)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def secured(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                headers = [
                    (name, value + b"; Secure")
                    if name.lower() == b"set-cookie" and b"secure" not in value.lower()
                    else (name, value)
                    for name, value in message.get("headers", [])
                ]
                headers.append((b"strict-transport-security", HSTS_VALUE))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, secured)
