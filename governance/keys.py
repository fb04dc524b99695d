"""The project key: keyed pseudonymisation (HMAC-SHA256) and encryption at rest (AES-GCM).

One 256-bit secret per deployment, read from ``RADGATE_PROJECT_KEY`` or a key file created
with mode 0600 on first use (never in the repository). Purpose-specific sub-keys are derived
with HKDF so that a UID hash can never be replayed as a date offset or an encryption key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from governance.settings import Settings, get_settings

__all__ = ["KeyError_", "ProjectKey", "load_project_key", "seal_key_path", "write_secret_file"]

_NONCE_BYTES = 12


class KeyError_(RuntimeError):
    """The project key is missing, malformed or does not match what the data was sealed with."""


@dataclass(frozen=True)
class ProjectKey:
    """A project secret and the sub-keys derived from it.

    ``seal_secret``, when set, is a separate encryption key (``keys/seal.key``): it can be
    rotated (``radgate keys rotate``) without changing any pseudonym, since the HMAC key of the
    de-identification stays ``secret``.
    """

    secret: bytes = field(repr=False)
    seal_secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise KeyError_("project key must be exactly 32 bytes")
        if self.seal_secret is not None and len(self.seal_secret) != 32:
            raise KeyError_("seal key must be exactly 32 bytes")

    @property
    def seal_key_id(self) -> str:
        """Public id of the encryption key in use (changes on rotation)."""
        material = self.seal_secret if self.seal_secret is not None else self.secret
        return hashlib.sha256(b"radgate-seal-key-id" + material).hexdigest()[:16]

    def with_seal_secret(self, seal_secret: bytes) -> ProjectKey:
        return ProjectKey(self.secret, seal_secret)

    @property
    def key_id(self) -> str:
        """A public identifier of the key (safe to log and store): not reversible."""
        return hashlib.sha256(b"radgate-key-id" + self.secret).hexdigest()[:16]

    def derive(self, purpose: str) -> bytes:
        """A 32-byte sub-key for one purpose (``uid``, ``date``, ``pseudonym``, ``seal``...)."""
        material = self.seal_secret if purpose == "seal" and self.seal_secret is not None else self.secret
        return _derive(material, purpose)

    def mac(self, purpose: str, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the sub-key for ``purpose``."""
        return hmac.new(self.derive(purpose), message, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        """AES-256-GCM encryption; the output is nonce || ciphertext || tag."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + _aead(self.derive("seal")).encrypt(nonce, plaintext, associated)

    def unseal(self, sealed: bytes, associated: bytes = b"") -> bytes:
        """Decrypt what :meth:`seal` produced; raises :class:`KeyError_` on a wrong key or tampering."""
        from cryptography.exceptions import InvalidTag

        try:
            return _aead(self.derive("seal")).decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated
            )
        except (InvalidTag, ValueError) as exc:
            raise KeyError_("cannot decrypt: wrong project key or tampered data") from exc


@functools.lru_cache(maxsize=64)
def _derive(material: bytes, purpose: str) -> bytes:
    # HKDF is deterministic: derive each (key, purpose) once per process, not on every call
    # (de-identification seals a pseudonym map entry per patient: thousands per corpus).
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"radgate-v1", info=purpose.encode())
    return hkdf.derive(material)


@functools.lru_cache(maxsize=16)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)


def _parse_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyError_("project key must be 64 hexadecimal characters") from exc
    if len(raw) != 32:
        raise KeyError_("project key must be 64 hexadecimal characters")
    return raw


def seal_key_path(settings: Settings) -> Path:
    """Where the (rotatable) encryption key lives: next to the project key file."""
    return settings.resolved_key_file.with_name("seal.key")


def write_secret_file(path: Path, secret: bytes) -> None:
    """Write a key file with owner-only permissions, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_project_key(settings: Settings | None = None, *, create: bool = True) -> ProjectKey:
    """The project key from ``RADGATE_PROJECT_KEY`` or the key file (created if absent)."""
    settings = settings or get_settings()
    seal_path = seal_key_path(settings)
    seal = _parse_hex(seal_path.read_text()) if seal_path.exists() else None
    if settings.project_key is not None:
        return ProjectKey(_parse_hex(settings.project_key.get_secret_value()), seal)
    path: Path = settings.resolved_key_file
    if path.exists():
        return ProjectKey(_parse_hex(path.read_text()), seal)
    if not create:
        raise KeyError_("no project key: set RADGATE_PROJECT_KEY or create the key file")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
    return ProjectKey(secret)
