"""MACed records of artifact hashes, keyed by the identity of the artifact's files.

An artifact's hash (:func:`governance.tags.artifact_sha256`) reads every byte of the model
(tens of MB), which a replica's first gate decision would otherwise spend. Whoever hashes a
local artifact through :func:`hash_and_record` leaves a record: the artifact's path, for each
of its files the relative path and identity (device, inode, size, modification and
status-change times in nanoseconds), and the tree hash, under an HMAC with the
``artifact-digest`` key (:mod:`governance.keyring`). :func:`recorded_sha256` returns the hash of
a record whose MAC verifies and whose files are, one for one, the files there now with the same
identities; anything else (no record or key, another key, a file added, removed, replaced,
rewritten or touched) returns ``None`` and the caller hashes the bytes.

Why the identity is enough: writing to a file, or setting its times back, sets its
status-change time to the current time, which only a privileged process can set back; replacing
or renaming a file over it gives another inode. A record is written only when the files did
not change while they were hashed and their times are at least :data:`SETTLE_S` in the past, so
a write in the same clock tick as the last recorded one cannot go unseen (file times have the
resolution of the kernel's clock tick, or a second on some file systems). The MAC keeps a
process that can write the records folder, but does not hold the key, from vouching for other
bytes. The gate reads records only for its ordinary decisions; ``fresh=True`` (deploy time)
always hashes the bytes, and so does the approval workflow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from governance.keyring import ARTIFACT_DIGEST, StoreKey, load_store_key
from governance.settings import get_settings
from governance.tags import artifact_files, artifact_sha256

__all__ = ["SETTLE_S", "file_identity", "hash_and_record", "record_path", "recorded_sha256", "settled"]

#: How long ago every file's modification and status-change times must be before a record of
#: its hash is written (longer than any file system's timestamp resolution).
SETTLE_S = 2.0

_DOMAIN = b"radgate-artifact-digest-v1\0"
_LOG = logging.getLogger(__name__)

Identity = list[list[Any]]  # [[relative path, device, inode, size, mtime_ns, ctime_ns], ...]


def record_path(root: Path) -> Path:
    """Where the record of the artifact at ``root`` is kept (under ``RADGATE_HOME/cache``)."""
    name = hashlib.sha256(str(root).encode()).hexdigest()[:32]
    return get_settings().home / "cache" / "artifact-digests" / f"{name}.json"


def file_identity(path: Path) -> tuple[int, int, int, int, int]:
    """Device, inode, size, modification and status-change times (ns) of the file at ``path``:
    what a write, a times reset or a replacement changes."""
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def settled(identity: tuple[int, ...], now_ns: int) -> bool:
    """Whether a :func:`file_identity`'s modification and status-change times are both at
    least :data:`SETTLE_S` before ``now_ns``."""
    return now_ns - max(identity[3], identity[4]) >= int(SETTLE_S * 1e9)


def _identity(root: Path) -> Identity:
    found = []
    for file in artifact_files(root):
        relative = file.name if file == root else file.relative_to(root).as_posix()
        found.append([relative, *file_identity(file)])
    return found


def _settled(identity: Identity, now_ns: int) -> bool:
    return all(settled(tuple(entry[1:]), now_ns) for entry in identity)


def _mac(key: StoreKey, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return key.mac(_DOMAIN + canonical).hex()


def recorded_sha256(root: Path) -> str | None:
    """The recorded hash of the artifact at ``root`` if its record is authentic and every file
    is the one recorded, unchanged; otherwise ``None`` (hash the bytes)."""
    try:
        stored = json.loads(record_path(root).read_text())
        key = load_store_key(ARTIFACT_DIGEST, create=False)
        body = {k: stored[k] for k in ("path", "files", "sha256")}
        if not hmac.compare_digest(str(stored["mac"]), _mac(key, body)):
            _LOG.warning("the artifact digest record of %s is not authentic: hashing the files", root)
            return None
        if body["path"] != str(root) or body["files"] != _identity(root):
            return None
        digest = body["sha256"]
        return digest if isinstance(digest, str) else None
    except Exception:  # no record, no key, unreadable: the caller hashes the files
        return None


def hash_and_record(root: Path) -> str:
    """The artifact hash of ``root`` (every byte read), recorded for :func:`recorded_sha256`
    when the files did not change while they were read and have settled. Recording is best
    effort: without the key or a writable home the hash is returned unrecorded.

    Raises :class:`FileNotFoundError` when ``root`` holds no file to hash.
    """
    before = _identity(root)
    digest = artifact_sha256(root)
    try:
        after = _identity(root)
        if after != before or not _settled(after, time.time_ns()):
            return digest
        key = load_store_key(ARTIFACT_DIGEST)
        body = {"path": str(root), "files": after, "sha256": digest}
        target = record_path(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            partial.write_text(json.dumps({**body, "mac": _mac(key, body)}))
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    except Exception as exc:  # the hash stands; only the shortcut for the next process is lost
        _LOG.debug("artifact digest of %s not recorded: %s", root, exc)
    return digest
