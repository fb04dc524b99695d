"""Gateway configuration (YAML under ``configs/gateway/``): the local SCP, the STOW-RS
listener, which peers may send, and the PACS peers RadGate pulls from and pushes to.

Credentials never live in the YAML: a peer names the environment variables that hold them.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from governance.strict import StrictModel
from governance.tls import ClientTls, ServerTls

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Acknowledge",
    "AllowedPeer",
    "ConfigError",
    "DicomListener",
    "GatewayConfig",
    "HttpListener",
    "PacsPeer",
    "PeerTls",
    "SpoolConfig",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("configs/gateway/gateway.yaml")
CONFIG_ENV = "RADGATE_GATEWAY_CONFIG"


class ConfigError(ValueError):
    """The gateway configuration is missing, unreadable or invalid."""


def _ae_title(value: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= 16 or "\\" in value or not value.isprintable():
        raise ValueError("an AE title is 1-16 printable characters without backslash")
    return value


AETitle = Annotated[str, AfterValidator(_ae_title)]


class PeerTls(StrictModel):
    """The certificate one peer AE must show over DICOM TLS, beyond one that the listener trusts:
    issued under ``ca_file`` (that peer's own CA: it must be in the chain the handshake
    verified) and/or exactly one of the pinned certificates: ``certificate_sha256`` (SHA-256 of
    the DER certificate) or ``certificate_file`` (PEM files of the peer's certificates, read at
    start: a deployment mounts the peer's certificate instead of writing its fingerprint down).
    Another CA the listener trusts, or another certificate of the same CA, is then refused for
    this AE title."""

    ca_file: Path | None = Field(default=None, description="PEM CA(s) of this peer")
    certificate_sha256: tuple[str, ...] = Field(
        default=(), description="pinned certificates: SHA-256 of the DER encoding, hex (colons allowed)"
    )
    certificate_file: tuple[Path, ...] = Field(
        default=(), description="pinned certificates: PEM files of the peer's own certificates"
    )

    @field_validator("certificate_sha256")
    @classmethod
    def _fingerprints(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        normalised = tuple(value.replace(":", "").strip().lower() for value in values)
        for value in normalised:
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(
                    "a certificate fingerprint is 64 hex digits (SHA-256 of the DER certificate)"
                )
        return normalised

    @model_validator(mode="after")
    def _pins_something(self) -> PeerTls:
        if self.ca_file is None and not self.certificate_sha256 and not self.certificate_file:
            raise ValueError("peer tls needs ca_file and/or certificate_sha256 or certificate_file")
        return self


class AllowedPeer(StrictModel):
    """A calling AE title allowed to send, optionally only from some hosts or networks, and
    (``tls``) only with its own certificate."""

    ae_title: AETitle
    hosts: tuple[str, ...] = Field(default=(), description="IP addresses or CIDR networks; empty: any")
    tls: PeerTls | None = Field(default=None, description="the CA / certificate this peer must show")

    @field_validator("hosts")
    @classmethod
    def _networks(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            ipaddress.ip_network(host, strict=False)
        return hosts

    def permits(self, ae_title: str, host: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        return not self.hosts or self.names_host(host)

    def names_host(self, host: str) -> bool:
        """Whether ``host`` is one of the hosts or networks listed (not: any host)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.hosts)


class Acknowledge(enum.StrEnum):
    """When a C-STORE is answered with success."""

    #: After de-identification, storage and the catalog commit: the sender hears quarantines.
    COMMITTED = "committed"
    #: Once the sealed input is durable in the receive spool (``imaging.gateway.spool``); a
    #: lower-priority drainer de-identifies it after. Over the spool's limits: as committed.
    RECEIVED = "received"


class SpoolConfig(StrictModel):
    """The receive spool of ``dicom.acknowledge: received``."""

    directory: Path | None = Field(default=None, description="default: $RADGATE_HOME/spool")
    max_bytes: int = Field(default=4 * 1024**3, ge=1, description="sealed bytes held at most")
    max_files: int = Field(default=20_000, ge=1, description="entries held at most")
    drainers: int = Field(default=1, ge=1, le=16, description="drainer processes")
    drainer_nice: int = Field(
        default=10, ge=0, le=19, description="CPU niceness of the drainers (receiving goes first)"
    )


class DicomListener(StrictModel):
    """The C-STORE / C-ECHO SCP."""

    ae_title: AETitle = "RADGATE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    max_associations: int = Field(default=32, ge=1)
    workers: int = Field(default=1, ge=1, le=64, description="SCP processes sharing the port (Linux)")
    max_pdu: int = Field(default=1_048_576, ge=0, description="0: unlimited")
    max_instance_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="larger instances are refused (0xA700), never buffered"
    )
    max_association_bytes: int = Field(
        default=64 * 1024**3, ge=0, description="bytes one association may carry (0: no ceiling)"
    )
    # Connections that have not yet associated: each holds a thread, so they are bounded, in
    # total and per peer address; a few more are kept for hosts named in allowed_peers, so
    # that strangers holding connections open cannot lock out the PACS. Over these the
    # connection is closed at once (no thread, no buffer).
    max_pending: int = Field(default=32, ge=1, description="connections not yet associated")
    max_pending_per_host: int = Field(default=8, ge=1)
    reserved_pending: int = Field(default=8, ge=0, description="kept for hosts in allowed_peers")
    network_timeout: float = Field(default=60.0, gt=0, description="idle time between messages (s)")
    # ARTIM: from the accept to a complete A-ASSOCIATE-RQ (TLS handshake included).
    acse_timeout: float = Field(default=30.0, gt=0)
    # The rest of a message, and every PDU from its first byte to its last.
    dimse_timeout: float = Field(default=60.0, gt=0)
    require_called_ae_title: bool = True
    # Empty means nobody: an open SCP has to be asked for explicitly with ``allow_any``.
    allowed_peers: tuple[AllowedPeer, ...] = ()
    allow_any: bool = False
    tls: ServerTls | None = Field(default=None, description="DICOM TLS; when set, plaintext is refused")
    acknowledge: Acknowledge = Field(
        default=Acknowledge.COMMITTED, description="answer C-STORE after the commit, or once spooled"
    )

    @model_validator(mode="after")
    def _pins_need_tls(self) -> DicomListener:
        for peer in self.allowed_peers:
            if peer.tls is None:
                continue
            if self.tls is None:
                raise ValueError(f"allowed peer {peer.ae_title}: a peer certificate needs dicom.tls")
            if peer.tls.ca_file is None and self.tls.ca_file is None:
                raise ValueError(
                    f"allowed peer {peer.ae_title}: a pinned fingerprint needs a CA that issued it "
                    "(the peer's tls.ca_file or dicom.tls.ca_file)"
                )
        return self

    def permits(self, ae_title: str, host: str) -> bool:
        """Whether the calling AE title may associate from ``host``. An AE title that has a
        certificate pinned is never let in by ``allow_any``; its certificate is checked by
        ``imaging.gateway.peer_tls``."""
        if any(peer.permits(ae_title, host) for peer in self.allowed_peers):
            return True
        return self.allow_any and not self.pinned(ae_title)

    def pinned(self, ae_title: str) -> bool:
        return any(peer.tls is not None and peer.ae_title == ae_title.strip() for peer in self.allowed_peers)

    def reserved_for(self, host: str) -> bool:
        """Whether ``host`` is named in the allow-list (and may use the reserved capacity)."""
        return any(peer.hosts and peer.names_host(host) for peer in self.allowed_peers)


class HttpListener(StrictModel):
    """The DICOMweb (STOW-RS) listener; loopback by default, HTTPS when ``tls`` is set."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8042, ge=0, le=65535)
    max_request_bytes: int = Field(default=2 * 1024**3, ge=1)
    tls: ServerTls | None = None


class PacsPeer(StrictModel):
    """A PACS RadGate pulls from (DICOMweb or C-FIND/C-MOVE) and pushes to (C-STORE)."""

    name: str
    ae_title: AETitle
    host: str = "127.0.0.1"
    port: int = Field(default=104, ge=1, le=65535)
    dicomweb_url: str | None = None
    username_env: str | None = Field(default=None, description="env var holding the HTTP user")
    password_env: str | None = Field(default=None, description="env var holding the HTTP password")
    token_env: str | None = Field(default=None, description="env var holding a bearer token")
    tls: ClientTls | None = Field(default=None, description="DICOM TLS to this PACS (its own CA file)")

    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for an association to this PACS (None: plaintext)."""
        if self.tls is None:
            return None
        return self.tls.context(), self.tls.server_name or self.host

    def credentials(self) -> tuple[str, str] | None:
        if not (self.username_env and self.password_env):
            return None
        user, password = os.environ.get(self.username_env), os.environ.get(self.password_env)
        if user is None or password is None:
            raise ConfigError(
                f"PACS {self.name!r}: set {self.username_env} and {self.password_env} in the environment"
            )
        return user, password

    def token(self) -> str | None:
        if not self.token_env:
            return None
        token = os.environ.get(self.token_env)
        if token is None:
            raise ConfigError(f"PACS {self.name!r}: set {self.token_env} in the environment")
        return token


class GatewayConfig(StrictModel):
    dicom: DicomListener = DicomListener()
    http: HttpListener = HttpListener()
    pacs: tuple[PacsPeer, ...] = ()
    spool: SpoolConfig = SpoolConfig()
    drain_timeout: float = Field(default=60.0, ge=0, description="seconds SIGTERM waits for transfers")
    stale_temp_age: float = Field(
        default=300.0, ge=0, description="at start, remove store temp files older than this (s)"
    )

    def peer(self, name: str) -> PacsPeer:
        for peer in self.pacs:
            if peer.name == name:
                return peer
        known = ", ".join(p.name for p in self.pacs) or "none"
        raise ConfigError(f"no PACS named {name!r} in the gateway configuration (known: {known})")


def load_config(path: Path | str | None = None) -> GatewayConfig:
    """Read the YAML at ``path``, ``$RADGATE_GATEWAY_CONFIG`` or ``configs/gateway/gateway.yaml``."""
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        raw = yaml.safe_load(chosen.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read gateway configuration {chosen}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"gateway configuration {chosen} is not valid YAML") from exc
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"gateway configuration {chosen} is invalid:\n{exc}") from exc
