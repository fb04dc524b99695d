"""External witnesses of the signed audit head: an append-only file or syslog.

The head file (``audit/head.json``) sits next to the catalog; a witness keeps a copy of every
signed head where an attacker of the database and of the RadGate host is not: a file on
another disk or a remote mount opened in append mode (``chattr +a`` makes the kernel refuse
rewrites), or a syslog collector. The gate reads the last line of a file witness so that an
old head put back in place of the newest one is refused; syslog is write-only (for auditors).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["WitnessError", "last_witnessed", "send_to_witness"]

_TAIL_BYTES = 4096


class WitnessError(RuntimeError):
    """The witness could not be written or read."""


def _syslog_address(spec: str) -> tuple[str, int]:
    _, _, rest = spec.partition(":")
    host, _, port = rest.rpartition(":")
    try:
        return (host or "127.0.0.1", int(port or 514))
    except ValueError as exc:
        raise WitnessError(f"bad syslog witness {spec!r}: use syslog:HOST:PORT") from exc


def send_to_witness(spec: str, anchor: bytes) -> None:
    """Append one signed head (JSON, one line) to the witness named by ``spec``."""
    if spec.startswith("syslog:"):
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # RFC 5424: facility security/authorization (4) at notice (5) = <37>
        message = f"<37>1 {stamp} {socket.gethostname()} radgate - audit-head - ".encode() + anchor
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, _syslog_address(spec))
        return
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, anchor.strip() + b"\n")  # one write in append mode: lines never interleave
    finally:
        os.close(fd)


def last_witnessed(spec: str) -> dict[str, Any] | None:
    """The newest head a file witness holds (highest ``seq`` among its last lines), or
    ``None`` for syslog or an empty witness."""
    if spec.startswith("syslog:"):
        return None
    path = Path(spec)
    if not path.exists():
        return None
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read().splitlines()
    best: dict[str, Any] | None = None
    for line in tail[1:] if size > _TAIL_BYTES else tail:
        try:
            anchor = json.loads(line)
            if best is None or int(anchor["seq"]) >= int(best["seq"]):  # the latest of equals
                best = anchor
        except (ValueError, KeyError, TypeError):
            continue
    return best
