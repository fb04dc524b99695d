"""The pseudonym key: keyed pseudonymisation (HMAC-SHA256) for the de-identifier.

A 256-bit secret read from ``RADGATE_PROJECT_KEY`` or ``keys/project.key`` (created with mode
0600 on first use, never in the repository). Purpose-specific sub-keys (``uid``, ``date``,
``pseudonym``, ``lookup``...) are derived with HKDF so that a UID hash can never be replayed as
a date offset. It is the de-identifier's key only: it no longer encrypts anything, signs the
audit log or protects sessions (each has its own key, :mod:`governance.keyring`).

:meth:`ProjectKey.seal` seals to the honest broker's public key (any service can seal; only
the broker's private key unseals); :meth:`ProjectKey.legacy_unseal` reads data sealed by
earlier releases under the project key (``radgate keys migrate``).
"""

from __future__ import annotations

import contextlib
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

from governance.keyring import (
    Broker,
    BrokerSealer,
    KeyMissing,
    load_broker,
    load_broker_sealer,
    write_secret_file,
)
from governance.settings import Settings, get_settings

__all__ = [
    "KeyError_",
    "ProjectKey",
    "key_id_of_file",
    "key_id_path",
    "load_project_key",
    "project_key_id",
    "seal_key_path",
    "write_secret_file",
]

_NONCE_BYTES = 12


class KeyError_(RuntimeError):
    """The project key is missing, malformed or does not match what the data was sealed with."""


@dataclass(frozen=True)
class ProjectKey:
    """The de-identifier's pseudonym secret, and the broker sealer it seals originals with.

    ``sealer`` is the honest broker's public key (or, in the broker's own process, the key
    pair); when not given it is loaded from the configured keys directory on first use.
    ``seal_secret`` is only for reading data sealed by earlier releases (``keys/seal.key``).
    """

    secret: bytes = field(repr=False)
    seal_secret: bytes | None = field(default=None, repr=False)
    sealer: BrokerSealer | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise KeyError_("project key must be exactly 32 bytes")
        if self.seal_secret is not None and len(self.seal_secret) != 32:
            raise KeyError_("seal key must be exactly 32 bytes")

    @property
    def key_id(self) -> str:
        """A public identifier of the key (safe to log and store): not reversible."""
        return hashlib.sha256(b"radgate-key-id" + self.secret).hexdigest()[:16]

    @property
    def seal_key_id(self) -> str:
        """Public id of the broker key that :meth:`seal` seals to (changes on rotation)."""
        return self._sealer().key_id

    def derive(self, purpose: str) -> bytes:
        """A 32-byte sub-key for one purpose (``uid``, ``date``, ``pseudonym``...)."""
        return _derive(self.secret, purpose)

    def mac(self, purpose: str, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the sub-key for ``purpose``."""
        return hmac.new(self.derive(purpose), message, hashlib.sha256).digest()

    def _sealer(self) -> BrokerSealer:
        if self.sealer is not None:
            return self.sealer
        try:
            return load_broker_sealer()
        except KeyMissing as exc:
            raise KeyError_(str(exc)) from exc

    def seal(self, plaintext: bytes, associated: bytes = b"", *, record: str = "reid-map") -> bytes:
        """Seal to the honest broker's public key; ``record`` names what it is (bound as AAD)."""
        return self._sealer().seal(plaintext, associated, record=record)

    def unseal(self, sealed: bytes, associated: bytes = b"", *, record: str = "reid-map") -> bytes:
        """Unseal with the honest broker's private key, which only the broker's process holds;
        raises :class:`KeyError_` elsewhere, on a wrong key or on tampering."""
        sealer = self.sealer
        try:
            broker = sealer if isinstance(sealer, Broker) else load_broker(create=False)
            return broker.unseal(sealed, associated, record=record)
        except (KeyMissing, OSError) as exc:
            raise KeyError_(f"cannot unseal: {exc}") from exc

    def legacy_unseal(self, sealed: bytes, associated: bytes = b"") -> bytes:
        """Decrypt what earlier releases sealed under the project (or seal) key: AES-256-GCM,
        nonce || ciphertext || tag. Only ``radgate keys migrate`` uses it."""
        from cryptography.exceptions import InvalidTag

        material = self.seal_secret if self.seal_secret is not None else self.secret
        try:
            return AESGCM(_derive(material, "seal")).decrypt(
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


def _parse_hex(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise KeyError_("project key must be 64 hexadecimal characters") from exc
    if len(raw) != 32:
        raise KeyError_("project key must be 64 hexadecimal characters")
    return raw


def seal_key_path(settings: Settings) -> Path:
    """Where earlier releases kept their rotatable encryption key (read by the migration)."""
    return settings.resolved_key_file.with_name("seal.key")


def load_project_key(settings: Settings | None = None, *, create: bool = True) -> ProjectKey:
    """The pseudonym key from ``RADGATE_PROJECT_KEY`` or the key file (created if absent), with
    the broker's public key to seal to (when this process has one)."""
    settings = settings or get_settings()
    seal_path = seal_key_path(settings)
    seal = _parse_hex(seal_path.read_text()) if seal_path.exists() else None
    try:
        sealer: BrokerSealer | None = load_broker_sealer(settings, create=create)
    except KeyMissing:
        sealer = None
    if settings.project_key is not None:
        return ProjectKey(_parse_hex(settings.project_key.get_secret_value()), seal, sealer)
    path: Path = settings.resolved_key_file
    if not path.exists():
        if not create:
            raise KeyError_("no project key: set RADGATE_PROJECT_KEY or create the key file")
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            write_secret_file(path, secrets.token_bytes(32), exclusive=True)
            # its public id beside it, for the services that only check which key made data
            key_id_path(settings).write_text(key_id_of_file(path) + "\n")
    return ProjectKey(_parse_hex(path.read_text()), seal, sealer)


def key_id_path(settings: Settings | None = None) -> Path:
    """Where the project key's public id is kept, beside the key file (``project.key.id``): a
    service that checks which key pseudonymised data (training's evidence) but pseudonymises
    nothing is given this file instead of the key."""
    path = (settings or get_settings()).resolved_key_file
    return path.with_name(path.name + ".id")


def key_id_of_file(path: Path) -> str:
    """The public id of the project key in the file at ``path`` (deployment scripts write it
    beside the key for the services that hold only the id)."""
    return ProjectKey(_parse_hex(path.read_text())).key_id


def project_key_id(settings: Settings | None = None) -> str:
    """The project key's public id: from the key where this process holds it, else from its id
    file (``key_id_path``). Raises :class:`KeyError_` when there is neither."""
    settings = settings or get_settings()
    key_file = settings.resolved_key_file
    if settings.project_key is not None or os.access(key_file, os.R_OK):
        return load_project_key(settings, create=False).key_id
    try:
        text = key_id_path(settings).read_text().strip()
    except OSError:
        raise KeyError_("no project key and no project key id (project.key.id) here") from None
    if len(text) != 16 or any(c not in "0123456789abcdef" for c in text):
        raise KeyError_("the project key id file does not hold a key id")
    return text
