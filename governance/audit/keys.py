"""The audit signing key over time: migrating a chain MACed by an older release, rotating the key.

Earlier releases sealed each entry's hash with an HMAC of the project key, which every service
held. :func:`migrate_legacy_chain` verifies every such MAC with that key (refusing a chain that
does not verify), then signs each entry's unchanged hash with the audit writer's Ed25519 key
and writes a signed head anchor and checkpoint. :func:`rotate_audit_key` makes a new signing
key; the old public key is kept as retired so that entries it signed still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from governance.audit.chain import ChainGuard, Position, write_checkpoint
from governance.audit.entries import GENESIS_HASH, AuditError, AuditRow, row_hash
from governance.audit.log import AuditLog
from governance.keyring import (
    AuditSigner,
    audit_key_paths,
    load_audit_signer,
    load_audit_verifier,
    write_secret_file,
)
from governance.keys import ProjectKey
from governance.settings import Settings, get_settings

__all__ = ["AuditKeyChange", "migrate_legacy_chain", "rotate_audit_key"]

_LEGACY_MAC_PURPOSE = "audit-chain"


@dataclass(frozen=True)
class AuditKeyChange:
    entries: int
    head_seq: int
    old_key_id: str
    new_key_id: str


def _legacy_mac(key: ProjectKey, entry_hash: str) -> str:
    return hmac.new(key.derive(_LEGACY_MAC_PURPOSE), entry_hash.encode(), hashlib.sha256).hexdigest()


def migrate_legacy_chain(log: AuditLog, legacy: ProjectKey) -> AuditKeyChange:
    """Re-sign entries MACed with ``legacy`` after verifying the whole chain; idempotent."""
    signer = log.signer
    prev, expected, resigned = GENESIS_HASH, 1, 0
    with log.catalog.session() as session:
        for row in session.scalars(select(AuditRow).order_by(AuditRow.seq)):
            if row.seq != expected or row_hash(row) != row.hash or row.prev_hash != prev:
                raise AuditError(f"audit chain broken at entry {row.seq}: not migrated (run `audit verify`)")
            if row.key_id == legacy.key_id:
                if not hmac.compare_digest(row.mac, _legacy_mac(legacy, row.hash)):
                    raise AuditError(f"entry {row.seq} has a bad MAC under the legacy key: not migrated")
                session.execute(
                    update(AuditRow)
                    .where(AuditRow.seq == row.seq)
                    .values(key_id=signer.key_id, mac=log._sign(row.hash))
                )
                resigned += 1
            elif not log.signature_valid(row.key_id, row.hash, row.mac, row.action):
                raise AuditError(f"entry {row.seq} is signed by no known key: not migrated")
            prev, expected = row.hash, expected + 1
    head = log.head()
    if head is not None:
        log._write_head(head, force=True)
        write_checkpoint(log, Position(head.seq, head.hash))
    return AuditKeyChange(resigned, expected - 1, legacy.key_id, signer.key_id)


def rotate_audit_key(log: AuditLog, settings: Settings | None = None) -> AuditKeyChange:
    """A new audit signing key; the chain is verified first and checkpointed under the new key."""
    settings = settings or get_settings()
    head = ChainGuard(log).check()  # refuse to vouch for a chain that does not verify
    old = log.signer
    private_path, public_path, retired_path = audit_key_paths(settings)
    new = AuditSigner(secrets.token_bytes(32))
    retired = retired_path.read_text().split() if retired_path.exists() else []
    retired.append(old.public.hex())
    retired_path.write_text("\n".join(dict.fromkeys(retired)) + "\n")
    write_secret_file(private_path, new.private)
    write_secret_file(public_path, new.public)
    rotated = AuditLog(
        log.catalog, signer=load_audit_signer(settings), verifier=load_audit_verifier(settings)
    )
    rotated.head_file, rotated.witness = log.head_file, log.witness
    if head.seq:
        write_checkpoint(rotated, head)
        entry = rotated.head()
        if entry is not None:  # anchors are valid only under the current key: re-sign the head
            rotated._write_head(entry, force=True)
    return AuditKeyChange(0, head.seq, old.key_id, new.key_id)
