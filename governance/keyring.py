"""Separated keys: one key per purpose, each in its own file, held only by the service that needs it.

=======================  ===============================  ==========================================
file (``keys_dir``)      what it protects                 who holds it
=======================  ===============================  ==========================================
``project.key``          pseudonyms, UID hashes, date     the de-identifier (ingest, gateway)
                         shifts (HMAC sub-keys)
``broker.pub``           sealing originals (re-id map,    every service that seals
                         quarantined inputs, erasure
                         reasons) to the honest broker
``broker.key``           unsealing them (X25519 private)  the honest broker only
``audit-signing.key``    signing audit entries and the    the governance audit writer (the
                         head anchor (Ed25519 private)    UI and the admin console)
``audit-signing.pub``    verifying them                   every verifier (gate, auditor, UI)
``serving-store.key``    serving's own sealed records     serving (monitoring inputs, result views,
                         (AES-256-GCM)                    feedback comments)
``ui-session.key``       UI sessions and CSRF tokens      the UI only
``artifact-digest.key``  the gate's records of artifact   every process that asks the gate
                         hashes (HMAC)                    (serving, UI, CLI)
``audit-writer.key``     signing the audit entries of a   a service that writes no governance
                         restricted writer (Ed25519)      entry (gateway, serving, the training
                                                          cluster; ``SERVICE_WRITERS``): instead
                                                          of ``audit-signing.key``
``audit-writers.json``   the restricted writers' public   every verifier, beside
                         keys and the action prefixes     ``audit-signing.pub``
                         each may sign (a revoked key
                         stays, marked, so that what it
                         signed before still verifies)
=======================  ===============================  ==========================================

A file is read only by the loader for its purpose, so a service given one file cannot derive
the others (they are independent random secrets, not HKDF children of one root). In the
embedded single-machine default every file is created on first use under ``RADGATE_HOME/keys``
(mode 0600); a deployment creates them with ``radgate keys init`` and mounts each where needed.

Sealing to the broker is HPKE-style (RFC 9180's DHKEM(X25519) + HKDF-SHA256 + AES-256-GCM,
single-shot base mode): a fresh ephemeral X25519 key per message, the key and nonce derived
with HKDF from the shared secret and both public keys, and associated data that binds the
record type and the format version as well as the caller's lookup key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from governance.settings import Settings, get_settings

__all__ = [
    "ARTIFACT_DIGEST",
    "AUDIT_SIGNING",
    "BROKER",
    "GATEWAY_SPOOL",
    "RECORD_ERASURE",
    "RECORD_QUARANTINE",
    "RECORD_REID",
    "REVOKE_WRITER",
    "SERVICE_WRITERS",
    "SERVING_STORE",
    "UI_SESSION",
    "AuditSigner",
    "AuditVerifier",
    "AuditWriter",
    "Broker",
    "BrokerSealer",
    "KeyMissing",
    "StoreKey",
    "action_in_scope",
    "active_audit_writer",
    "ensure_service_writers",
    "keys_dir",
    "load_audit_signer",
    "load_audit_verifier",
    "load_broker",
    "load_broker_sealer",
    "load_store_key",
    "read_secret_file",
    "register_audit_writer",
    "revoke_audit_writer",
    "write_secret_file",
]

# Record types bound into the associated data of everything sealed (one per kind of record).
RECORD_REID = "reid-map"
RECORD_QUARANTINE = "quarantine-input"
RECORD_ERASURE = "erasure-reason"

BROKER = "broker"
AUDIT_SIGNING = "audit-signing"
SERVING_STORE = "serving-store"
UI_SESSION = "ui-session"
ARTIFACT_DIGEST = "artifact-digest"
GATEWAY_SPOOL = "gateway-spool"  # the gateway's receive spool (imaging.gateway.spool)

#: The governance entry that revokes a restricted writer's key (``radgate keys rotate --writer``):
#: its details name the revoked ``key_id``; an entry signed by that key after this one is forged.
REVOKE_WRITER = "keys.writer.revoke"

# Sealed formats start with a magic and a version; the version is also in the AEAD data.
SEALED_MAGIC = b"RGS2"  # sealed to the broker's public key
STORE_MAGIC = b"RGK2"  # sealed under a service's own symmetric key
_KEY_ID_BYTES = 8
_ENC_BYTES = 32
_NONCE_BYTES = 12


class KeyMissing(RuntimeError):
    """This process does not hold the key a step needs (by design, or it is not mounted)."""


def keys_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return settings.resolved_key_file.parent


def write_secret_file(path: Path, secret: bytes, *, exclusive: bool = False) -> None:
    """Write a key file (hex) with owner-only permissions, atomically: readers see the whole
    key or no file. With ``exclusive``, raise :class:`FileExistsError` when another process
    created it first (``link`` of a complete temporary file, which never replaces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_secret_file(path: Path, length: int = 32) -> bytes:
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except ValueError as exc:
        raise KeyMissing(f"{path.name} is not {2 * length} hexadecimal characters") from exc
    if len(raw) != length:
        raise KeyMissing(f"{path.name} is not {2 * length} hexadecimal characters")
    return raw


def _key_id(label: bytes, public: bytes) -> str:
    return hashlib.sha256(label + public).hexdigest()[:16]


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_or_create(path: Path, create: bool, public: Path | None = None) -> bytes:
    """A 32-byte secret from ``path``; created (racing processes agree on one) when allowed and
    no public half exists: a process given only the public key never makes a private one."""
    if path.exists():
        return read_secret_file(path)
    if not create or (public is not None and public.exists()):
        raise KeyMissing(f"this process holds no {path.name} (not mounted here)")
    with contextlib.suppress(FileExistsError):
        write_secret_file(path, secrets.token_bytes(32), exclusive=True)
    return read_secret_file(path)


def _aad(record: str, magic: bytes, associated: bytes) -> bytes:
    # Record type and format version are bound, not only the caller's lookup key: a sealed
    # comment cannot be replayed as a re-identification map entry.
    return magic + b"\0" + record.encode() + b"\0" + associated


# ---- the honest broker: seal with the public key, unseal only with the private key -------------


@dataclass(frozen=True)
class BrokerSealer:
    """Seals to the honest broker's X25519 public key: any service may seal, none may unseal."""

    public: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.public) != 32:
            raise KeyMissing("broker public key must be 32 bytes")

    @property
    def key_id(self) -> str:
        return _key_id(b"radgate-broker", self.public)

    def seal(self, plaintext: bytes, associated: bytes = b"", *, record: str) -> bytes:
        ephemeral = X25519PrivateKey.generate()
        enc = _raw_public(ephemeral.public_key())
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public))
        okm = HKDF(
            algorithm=hashes.SHA256(), length=44, salt=b"radgate-seal-v2", info=enc + self.public
        ).derive(shared)
        header = SEALED_MAGIC + bytes.fromhex(self.key_id)[:_KEY_ID_BYTES] + enc
        return header + AESGCM(okm[:32]).encrypt(okm[32:], plaintext, _aad(record, header, associated))

    def unseal(self, sealed: bytes, associated: bytes = b"", *, record: str) -> bytes:
        raise KeyMissing("unsealing needs the honest broker's private key, which this process does not hold")


@dataclass(frozen=True)
class Broker(BrokerSealer):
    """The honest broker's key pair: seals and unseals."""

    private: bytes = field(default=b"", repr=False)

    @classmethod
    def from_private(cls, private: bytes) -> Broker:
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(_raw_public(key.public_key()), private)

    @property
    def sealer(self) -> BrokerSealer:
        return BrokerSealer(self.public)

    def unseal(self, sealed: bytes, associated: bytes = b"", *, record: str) -> bytes:
        head = len(SEALED_MAGIC) + _KEY_ID_BYTES + _ENC_BYTES
        if not sealed.startswith(SEALED_MAGIC) or len(sealed) < head + 16:
            raise KeyMissing("not sealed to the broker key (legacy format: run `radgate keys migrate`)")
        if sealed[4 : 4 + _KEY_ID_BYTES] != bytes.fromhex(self.key_id)[:_KEY_ID_BYTES]:
            raise KeyMissing("sealed to another broker key (rotated away?)")
        enc = sealed[head - _ENC_BYTES : head]
        shared = X25519PrivateKey.from_private_bytes(self.private).exchange(
            X25519PublicKey.from_public_bytes(enc)
        )
        okm = HKDF(
            algorithm=hashes.SHA256(), length=44, salt=b"radgate-seal-v2", info=enc + self.public
        ).derive(shared)
        try:
            return AESGCM(okm[:32]).decrypt(okm[32:], sealed[head:], _aad(record, sealed[:head], associated))
        except InvalidTag as exc:
            raise KeyMissing("cannot unseal: wrong broker key, record type or tampered data") from exc


def _broker_paths(settings: Settings) -> tuple[Path, Path]:
    directory = keys_dir(settings)
    return directory / "broker.key", directory / "broker.pub"


#: ``broker.pub`` as last read, per path: (device, inode, size, mtime) -> its sealer. Sealing runs
#: for every quarantined input and every new original value of an instance; one ``stat`` per seal
#: instead of reading and parsing the file. A rotated or replaced key file changes the signature,
#: so the next seal reads the new key.
_SEALERS: dict[Path, tuple[tuple[int, int, int, int], BrokerSealer]] = {}
_sealers_lock = threading.Lock()


def _public_sealer(public_path: Path) -> BrokerSealer | None:
    """The sealer for ``broker.pub`` (cached while the file is unchanged); None when absent."""
    try:
        info = public_path.stat()
    except FileNotFoundError:
        return None
    signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    with _sealers_lock:
        cached = _SEALERS.get(public_path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    sealer = BrokerSealer(read_secret_file(public_path))
    with _sealers_lock:
        _SEALERS[public_path] = (signature, sealer)
    return sealer


def load_broker_sealer(settings: Settings | None = None, *, create: bool = True) -> BrokerSealer:
    """The broker's public key (``broker.pub``); in the embedded default the pair is created."""
    settings = settings or get_settings()
    private_path, public_path = _broker_paths(settings)
    sealer = _public_sealer(public_path)
    if sealer is not None:
        return sealer
    if private_path.exists() or create:
        return load_broker(settings, create=create).sealer
    raise KeyMissing("no broker public key (broker.pub) here")


def load_broker(settings: Settings | None = None, *, create: bool = False) -> Broker:
    """The honest broker's private key (``broker.key``): only the broker's process holds it."""
    settings = settings or get_settings()
    private_path, public_path = _broker_paths(settings)
    broker = Broker.from_private(_load_or_create(private_path, create, public_path))
    if not public_path.exists():
        write_secret_file(public_path, broker.public)
    return broker


# ---- the audit writer's signing key ---------------------------------------------------------

#: The services that write no governance entry, each with its own writer key valid only for the
#: entries it writes (``radgate keys init`` and ``docker/make-secrets.sh`` register them; the
#: deployment mounts ``audit-writer-NAME.key`` as that service's ``audit-writer.key``). An entry
#: ending in ``.`` is a prefix, any other one action exactly. Governance entries (``model.*``
#: decisions, ``policy.*``, ``user.*``, ``keys.*``) and head anchors are the audit writer's
#: (``audit-signing.key``: the UI and the admin CLI). ``tests/unit/test_audit_writer_scopes.py``
#: checks the audit calls of each service's modules against its scope.
SERVICE_WRITERS: dict[str, tuple[str, ...]] = {
    # the de-identifier: intake (C-STORE, STOW-RS, pulls) and de-identification runs
    "gateway": ("gateway.", "ingest.", "deid."),
    # Ray Serve: gate decisions on loads and requests, rejections, batch runs, the worklist,
    # clinicians' feedback and the drift checks of its first replica
    "serving": ("serve.", "ups.", "monitoring.feedback", "monitoring.drift."),
    # the training cluster: runs, the registration of the trained version (pending review: no
    # decision), retraining and explanations run there
    "training": ("train.", "model.register", "monitoring.retrain", "explain."),
}


def action_in_scope(action: str, scope: tuple[str, ...]) -> bool:
    """Whether a restricted writer's ``scope`` covers ``action``: an entry ending in ``.`` is a
    prefix, any other one names a single action (``model.register``, not ``model.registered``)."""
    return any(action.startswith(s) if s.endswith(".") else action == s for s in scope)


def _valid_scope_entry(entry: str) -> bool:
    """``word.`` or ``word.word...``: a prefix, or one action (an action always has a dot)."""
    parts = entry.removesuffix(".").split(".")
    plain = all(part and part.replace("-", "").replace("_", "").isalnum() for part in parts)
    return plain and "." in entry


@dataclass(frozen=True)
class AuditWriter:
    """A restricted audit writer: its Ed25519 public key and the actions it may sign (prefixes
    such as ``gateway.``, or exact actions such as ``model.register``). It signs no head anchor or
    checkpoint."""

    name: str
    public: bytes
    actions: tuple[str, ...]
    #: the seq of the ``keys.writer.revoke`` entry that revoked this key (its later entries are
    #: forged); ``None`` while it is in use
    revoked_after: int | None = None

    @property
    def key_id(self) -> str:
        return _key_id(b"radgate-audit", self.public)


@dataclass(frozen=True)
class AuditVerifier:
    """Ed25519 public keys that audit entries may be signed with (current first, then retired),
    and the restricted writers' keys, each valid only for its own actions."""

    publics: tuple[bytes, ...]
    writers: tuple[AuditWriter, ...] = ()

    @property
    def key_id(self) -> str:
        return _key_id(b"radgate-audit", self.publics[0])

    @functools.cached_property
    def _by_id(self) -> dict[str, Ed25519PublicKey]:
        keys = {_key_id(b"radgate-audit", p): Ed25519PublicKey.from_public_bytes(p) for p in self.publics}
        for writer in self.writers:
            keys.setdefault(writer.key_id, Ed25519PublicKey.from_public_bytes(writer.public))
        return keys

    @functools.cached_property
    def _scopes(self) -> dict[str, tuple[str, ...]]:
        unrestricted = {_key_id(b"radgate-audit", p) for p in self.publics}
        return {w.key_id: w.actions for w in self.writers if w.key_id not in unrestricted}

    def verify(self, key_id: str, message: bytes, signature_hex: str) -> bool:
        public = self._by_id.get(key_id)
        if public is None:
            return False
        try:
            public.verify(bytes.fromhex(signature_hex), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def unrestricted(self, key_id: str) -> bool:
        """Whether ``key_id`` is one of the governance audit writer's keys (current or retired)."""
        return key_id in {_key_id(b"radgate-audit", p) for p in self.publics}

    def permits(self, key_id: str, action: str) -> bool:
        """Whether the key ``key_id`` may sign an entry of ``action`` (a restricted writer only
        its own actions; the audit writer's keys everything)."""
        scope = self._scopes.get(key_id)
        return scope is None or action_in_scope(action, scope)


@dataclass(frozen=True)
class AuditSigner:
    """The audit writer's Ed25519 private key; with ``scope``, a restricted writer's key, which
    may sign only entries whose action starts with one of those prefixes."""

    private: bytes = field(repr=False)
    scope: tuple[str, ...] | None = None

    @functools.cached_property
    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private)

    @property
    def public(self) -> bytes:
        return _raw_public(self._key.public_key())

    @property
    def key_id(self) -> str:
        return _key_id(b"radgate-audit", self.public)

    def sign(self, message: bytes) -> str:
        return self._key.sign(message).hex()


def audit_key_paths(settings: Settings) -> tuple[Path, Path, Path]:
    directory = keys_dir(settings)
    return (
        directory / "audit-signing.key",
        directory / "audit-signing.pub",
        directory / "audit-signing.retired",
    )


def audit_writers_path(settings: Settings) -> Path:
    return keys_dir(settings) / "audit-writers.json"


def read_audit_writers(settings: Settings) -> tuple[AuditWriter, ...]:
    """The registered restricted writers (``audit-writers.json``; none when it is absent)."""
    import json

    path = audit_writers_path(settings)
    if not path.exists():
        return ()
    try:
        return tuple(
            AuditWriter(
                str(w["name"]),
                bytes.fromhex(w["public"]),
                tuple(str(a) for a in w["actions"]),
                None if w.get("revoked_after") is None else int(w["revoked_after"]),
            )
            for w in json.loads(path.read_text())["writers"]
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyMissing(f"{path.name} is not a list of audit writers") from exc


def _write_audit_writers(writers: list[AuditWriter], settings: Settings) -> None:
    import json

    registry = {
        "writers": [
            {"name": w.name, "public": w.public.hex(), "actions": list(w.actions)}
            | ({} if w.revoked_after is None else {"revoked_after": w.revoked_after})
            for w in writers
        ]
    }
    target = audit_writers_path(settings)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_text(json.dumps(registry, indent=2) + "\n")
    tmp.replace(target)


def register_audit_writer(name: str, actions: tuple[str, ...], settings: Settings | None = None) -> Path:
    """A new restricted writer ``name`` that may sign only entries of ``actions`` (a prefix ending
    in ``.``, or one action exactly): its private key is written to ``audit-writer-NAME.key``
    (mount it as the service's ``audit-writer.key``), its public key and scope added to
    ``audit-writers.json`` (every verifier needs that file). Returns the private key's path."""
    settings = settings or get_settings()
    if not name.replace("-", "").isalnum() or not actions or not all(map(_valid_scope_entry, actions)):
        raise ValueError(
            "a writer has a plain name and actions: prefixes ending in '.' ('gateway.') or exact "
            "actions ('model.register')"
        )
    writers = list(read_audit_writers(settings))
    if any(w.name == name and w.revoked_after is None for w in writers):
        # Replacing its key in place would leave the entries it signed unverifiable (a broken
        # chain): a key is revoked first (revoke_audit_writer), and stays registered.
        raise ValueError(f"audit writer {name!r} is registered already")
    private = secrets.token_bytes(32)
    path = keys_dir(settings) / f"audit-writer-{name}.key"
    write_secret_file(path, private)
    writers.append(
        AuditWriter(name, _raw_public(Ed25519PrivateKey.from_private_bytes(private).public_key()), actions)
    )
    _write_audit_writers(writers, settings)
    return path


def active_audit_writer(name: str, settings: Settings | None = None) -> AuditWriter:
    """The registered, unrevoked writer ``name`` (:class:`KeyMissing` if there is none)."""
    for writer in read_audit_writers(settings or get_settings()):
        if writer.name == name and writer.revoked_after is None:
            return writer
    raise KeyMissing(f"no audit writer {name!r} in use (not registered, or revoked)")


def revoke_audit_writer(name: str, after_seq: int, settings: Settings | None = None) -> AuditWriter:
    """Mark writer ``name``'s key revoked after audit entry ``after_seq`` (the ``keys.writer.revoke``
    entry that records it) in ``audit-writers.json``: its public key stays, so that the entries it
    signed up to there still verify; a later one is forged, and this process's signer refuses the
    key. Its private key file ``audit-writer-NAME.key`` is removed (a replacement, registered with
    :func:`register_audit_writer`, takes that name). Returns the revoked writer."""
    settings = settings or get_settings()
    old = active_audit_writer(name, settings)
    writers = [
        AuditWriter(w.name, w.public, w.actions, after_seq) if w == old else w
        for w in read_audit_writers(settings)
    ]
    _write_audit_writers(writers, settings)
    path = keys_dir(settings) / f"audit-writer-{name}.key"
    if (
        path.exists()
        and _raw_public(Ed25519PrivateKey.from_private_bytes(read_secret_file(path)).public_key())
        == old.public
    ):
        path.unlink()
    return AuditWriter(old.name, old.public, old.actions, after_seq)


def ensure_service_writers(
    settings: Settings | None = None, names: tuple[str, ...] = tuple(SERVICE_WRITERS)
) -> dict[str, Path]:
    """Register each of the services' writers (:data:`SERVICE_WRITERS`) not registered yet (or
    only with a revoked key); existing ones are kept (a new key would leave the entries they
    signed unverifiable).
    Returns every named writer's private key path (``audit-writer-NAME.key``)."""
    settings = settings or get_settings()
    registered = {w.name for w in read_audit_writers(settings) if w.revoked_after is None}
    paths = {}
    for name in names:
        path = keys_dir(settings) / f"audit-writer-{name}.key"
        if name not in registered:
            path = register_audit_writer(name, SERVICE_WRITERS[name], settings)
        paths[name] = path
    return paths


def load_audit_signer(settings: Settings | None = None, *, create: bool = True) -> AuditSigner:
    """The audit writer's key; in a process given ``audit-writer.key`` instead (a restricted
    writer), that key with the scope ``audit-writers.json`` registers for it."""
    settings = settings or get_settings()
    private_path, public_path, _ = audit_key_paths(settings)
    writer_path = keys_dir(settings) / "audit-writer.key"
    if not private_path.exists() and writer_path.exists():
        private = read_secret_file(writer_path)
        public = _raw_public(Ed25519PrivateKey.from_private_bytes(private).public_key())
        for writer in read_audit_writers(settings):
            if writer.public == public:
                if writer.revoked_after is not None:
                    raise KeyMissing(
                        f"audit-writer.key ({writer.name}) was revoked at audit entry "
                        f"{writer.revoked_after}: mount its replacement"
                    )
                return AuditSigner(private, scope=writer.actions)
        raise KeyMissing("audit-writer.key is not registered in audit-writers.json")
    signer = AuditSigner(_load_or_create(private_path, create, public_path))
    if not public_path.exists():
        write_secret_file(public_path, signer.public)
    return signer


def load_audit_verifier(settings: Settings | None = None, *, create: bool = True) -> AuditVerifier:
    """The current public key (``audit-signing.pub``) plus retired ones (one per line in
    ``audit-signing.retired``) so that entries signed before a rotation still verify."""
    settings = settings or get_settings()
    private_path, public_path, retired_path = audit_key_paths(settings)
    if not public_path.exists():
        if not private_path.exists() and not create:
            raise KeyMissing("no audit verification key (audit-signing.pub) here")
        load_audit_signer(settings, create=create)
    publics = [read_secret_file(public_path)]
    if retired_path.exists():
        for line in retired_path.read_text().split():
            publics.append(bytes.fromhex(line))
    return AuditVerifier(tuple(publics), read_audit_writers(settings))


# ---- a service's own symmetric key ----------------------------------------------------------


@dataclass(frozen=True)
class StoreKey:
    """AES-256-GCM under one service's own key (serving's records, the UI's sessions)."""

    purpose: str
    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"radgate-store-key-id" + self.purpose.encode() + self.secret).hexdigest()[:16]

    def mac(self, message: bytes) -> bytes:
        import hmac

        return hmac.new(self.secret, message, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, associated: bytes = b"", *, record: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        header = STORE_MAGIC + bytes.fromhex(self.key_id)[:_KEY_ID_BYTES]
        return (
            header + nonce + AESGCM(self.secret).encrypt(nonce, plaintext, _aad(record, header, associated))
        )

    def unseal(self, sealed: bytes, associated: bytes = b"", *, record: str) -> bytes:
        head = len(STORE_MAGIC) + _KEY_ID_BYTES
        if not sealed.startswith(STORE_MAGIC):
            raise KeyMissing("not sealed under this service key (legacy format: run `radgate keys migrate`)")
        if sealed[4:head] != bytes.fromhex(self.key_id)[:_KEY_ID_BYTES]:
            raise KeyMissing(f"sealed under another {self.purpose} key (rotated away?)")
        nonce, body = sealed[head : head + _NONCE_BYTES], sealed[head + _NONCE_BYTES :]
        try:
            return AESGCM(self.secret).decrypt(nonce, body, _aad(record, sealed[:head], associated))
        except InvalidTag as exc:
            raise KeyMissing("cannot unseal: wrong key, record type or tampered data") from exc


def store_key_path(purpose: str, settings: Settings) -> Path:
    if purpose not in (SERVING_STORE, UI_SESSION, ARTIFACT_DIGEST, GATEWAY_SPOOL):
        raise ValueError(f"unknown service key {purpose!r}")
    return keys_dir(settings) / f"{purpose}.key"


def load_store_key(purpose: str, settings: Settings | None = None, *, create: bool = True) -> StoreKey:
    """``serving-store`` (serving's sealed records), ``ui-session`` (sessions, CSRF),
    ``artifact-digest`` (the gate's records of artifact hashes) or ``gateway-spool`` (inputs
    the gateway acknowledged before de-identifying them)."""
    settings = settings or get_settings()
    return StoreKey(purpose, _load_or_create(store_key_path(purpose, settings), create))
