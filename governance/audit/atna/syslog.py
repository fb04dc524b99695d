"""RFC 5424 syslog transport for audit messages: UDP (RFC 5426), TCP or TLS (RFC 5425 framing).

IHE ATNA / DICOM PS3.15 A.5: facility 10 (security/authorization), severity 5 (notice), MSGID
``DICOM+RFC3881``, the XML as the MSG part (UTF-8 with BOM). Over TCP and TLS each message is
octet-counted (``LEN SP MSG``, RFC 5425 4.3), which also frames the XML's own newlines safely.
A send that fails raises :class:`SyslogError`; the exporter keeps the entry and retries.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["SyslogDestination", "SyslogError", "SyslogSender", "format_rfc5424"]

_FACILITY_AUTHPRIV = 10
_SEVERITY_NOTICE = 5
_MSGID = "DICOM+RFC3881"
_BOM = b"\xef\xbb\xbf"
#: UDP datagrams larger than this are refused rather than fragmented and lost (RFC 5426 3.2).
MAX_UDP_BYTES = 8192
MAX_MESSAGE_BYTES = 64 * 1024


class SyslogError(RuntimeError):
    """The collector could not be reached or did not take the message."""


@dataclass(frozen=True)
class SyslogDestination:
    """Where audit messages go: ``udp://``, ``tcp://`` or ``tls://host:port``."""

    transport: Literal["udp", "tcp", "tls"]
    host: str
    port: int
    ca_file: Path | None = None  # TLS: the collector's CA (default: system store)
    client_cert: Path | None = None  # TLS: our certificate (mutual authentication, RFC 5425 5.2)
    client_key: Path | None = None
    timeout_s: float = 5.0

    @classmethod
    def parse(cls, url: str, **options: object) -> SyslogDestination:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname or not parts.port:
            raise SyslogError("syslog destination must look like udp://, tcp:// or tls://HOST:PORT")
        return cls(parts.scheme, parts.hostname, parts.port, **options)  # type: ignore[arg-type]


def format_rfc5424(
    message: bytes,
    *,
    hostname: str,
    app_name: str = "radgate",
    procid: str = "-",
    when: datetime | None = None,
) -> bytes:
    """One RFC 5424 syslog message whose MSG is ``message`` (BOM-prefixed UTF-8)."""
    pri = _FACILITY_AUTHPRIV * 8 + _SEVERITY_NOTICE
    stamp = (
        (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    header = (
        f"<{pri}>1 {stamp} {_field(hostname, 255)} {_field(app_name, 48)} {_field(procid, 128)} {_MSGID} -"
    )
    if message.startswith(b"<?xml"):  # the MSG is the document: no declaration needed after the BOM
        message = message.split(b"?>", 1)[1].lstrip()
    return header.encode("ascii") + b" " + _BOM + message


def _open(sock: socket.socket) -> bool:
    """Whether a kept connection is still usable: a collector never sends, so a readable socket
    means it closed (or reset) and the next message must go over a new connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the nil value."""
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


class SyslogSender:
    """Sends framed messages to one destination; the TCP/TLS connection is kept and re-opened."""

    def __init__(self, destination: SyslogDestination, *, hostname: str | None = None) -> None:
        self.destination = destination
        self.hostname = hostname or socket.gethostname()
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, xml: bytes) -> None:
        frame = format_rfc5424(xml, hostname=self.hostname)
        if len(frame) > MAX_MESSAGE_BYTES:
            raise SyslogError(f"audit message of {len(frame)} bytes exceeds {MAX_MESSAGE_BYTES}")
        with self._lock:
            try:
                if self.destination.transport == "udp":
                    self._send_udp(frame)
                else:
                    self._send_stream(str(len(frame)).encode("ascii") + b" " + frame)
            except (OSError, ssl.SSLError) as exc:
                self._close()
                raise SyslogError(
                    f"syslog {self.destination.transport} send failed: {type(exc).__name__}"
                ) from exc

    def _send_udp(self, frame: bytes) -> None:
        if len(frame) > MAX_UDP_BYTES:
            raise SyslogError(f"audit message of {len(frame)} bytes is too large for UDP syslog")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(frame, (self.destination.host, self.destination.port))

    def _send_stream(self, data: bytes) -> None:
        if self._socket is not None and not _open(self._socket):
            self._close()
        if self._socket is None:
            self._socket = self._connect()
        self._socket.sendall(data)

    def _connect(self) -> socket.socket:
        dest = self.destination
        raw = socket.create_connection((dest.host, dest.port), timeout=dest.timeout_s)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if dest.transport == "tcp":
            return raw
        context = ssl.create_default_context(cafile=str(dest.ca_file) if dest.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if dest.client_cert is not None:
            context.load_cert_chain(str(dest.client_cert), str(dest.client_key) if dest.client_key else None)
        try:
            return context.wrap_socket(raw, server_hostname=dest.host)
        except (OSError, ssl.SSLError):
            raw.close()
            raise

    def _close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close()
