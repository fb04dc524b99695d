"""Gateway configuration (YAML under ``configs/gateway/``): the local SCP, the STOW-RS
listener, which peers may send, and the PACS peers RadGate pulls from and pushes to.

Credentials never live in the YAML: a peer names the environment variables that hold them.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AllowedPeer",
    "ConfigError",
    "DicomListener",
    "GatewayConfig",
    "HttpListener",
    "PacsPeer",
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowedPeer(_Model):
    """A calling AE title allowed to send, optionally only from some hosts or networks."""

    ae_title: AETitle
    hosts: tuple[str, ...] = Field(default=(), description="IP addresses or CIDR networks; empty: any")

    @field_validator("hosts")
    @classmethod
    def _networks(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            ipaddress.ip_network(host, strict=False)
        return hosts

    def permits(self, ae_title: str, host: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if not self.hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.hosts)


class DicomListener(_Model):
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
    network_timeout: float = 60.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    require_called_ae_title: bool = True
    # Empty means nobody: an open SCP has to be asked for explicitly with ``allow_any``.
    allowed_peers: tuple[AllowedPeer, ...] = ()
    allow_any: bool = False

    def permits(self, ae_title: str, host: str) -> bool:
        return self.allow_any or any(peer.permits(ae_title, host) for peer in self.allowed_peers)


class HttpListener(_Model):
    """The DICOMweb (STOW-RS) listener; loopback by default, put a TLS proxy in front."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8042, ge=0, le=65535)
    max_request_bytes: int = Field(default=2 * 1024**3, ge=1)


class PacsPeer(_Model):
    """A PACS RadGate pulls from (DICOMweb or C-FIND/C-MOVE) and pushes to (C-STORE)."""

    name: str
    ae_title: AETitle
    host: str = "127.0.0.1"
    port: int = Field(default=104, ge=1, le=65535)
    dicomweb_url: str | None = None
    username_env: str | None = Field(default=None, description="env var holding the HTTP user")
    password_env: str | None = Field(default=None, description="env var holding the HTTP password")
    token_env: str | None = Field(default=None, description="env var holding a bearer token")

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


class GatewayConfig(_Model):
    dicom: DicomListener = DicomListener()
    http: HttpListener = HttpListener()
    pacs: tuple[PacsPeer, ...] = ()
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
