"""Re-sealing what intake sealed to the honest broker: the re-identification map, quarantined
inputs and erasure reasons (``radgate keys rotate`` and ``radgate keys migrate``).

Rotation opens each record with the broker's current private key and seals it to a new key
pair; migration opens records that earlier releases sealed under the project key. Either way
the new key is on disk (``broker.key.next``) before anything is sealed to it, and a record
already sealed to it is left alone, so an interrupted run can simply be run again. The HMAC
key that derives UIDs, pseudonyms and date shifts is not touched (rotating it would change
every pseudonym and break longitudinal linkage).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from governance.catalog import Pseudonym, open_catalog
from governance.keyring import (
    RECORD_ERASURE,
    RECORD_QUARANTINE,
    RECORD_REID,
    SEALED_MAGIC,
    Broker,
    BrokerSealer,
    KeyMissing,
    keys_dir,
    load_broker,
    read_secret_file,
    write_secret_file,
)
from governance.settings import Settings, get_settings
from imaging.store import atomic_write

__all__ = ["BrokerReseal", "migrate_broker_stores", "rotate_broker_key"]

Unseal = Callable[[bytes, bytes, str], bytes]


@dataclass(frozen=True)
class BrokerReseal:
    old_key_id: str
    new_key_id: str
    map_entries: int
    quarantined_files: int
    erasure_records: int


def _reseal_all(unseal: Unseal, new: BrokerSealer, settings: Settings) -> tuple[int, int, int]:
    new_prefix = SEALED_MAGIC + bytes.fromhex(new.key_id)[:8]

    def again(sealed: bytes, aad: bytes, record: str) -> bytes | None:
        if sealed.startswith(new_prefix):
            return None  # done by an earlier, interrupted run
        return new.seal(unseal(sealed, aad, record), aad, record=record)

    from imaging.compliance.models import ErasureRecord

    entries = files = erasures = 0
    with open_catalog(settings).session() as session:
        for row in session.scalars(select(Pseudonym)):
            fresh = again(row.sealed_original, row.lookup.encode(), RECORD_REID)
            if fresh is not None:
                row.sealed_original = fresh
                entries += 1
        for erasure in session.scalars(select(ErasureRecord)):
            summary = dict(erasure.summary or {})
            if "reason_sealed" not in summary:
                continue
            sealed = base64.b64decode(summary["reason_sealed"])
            fresh = again(sealed, erasure.id.encode(), RECORD_ERASURE)
            if fresh is not None:
                erasure.summary = {**summary, "reason_sealed": base64.b64encode(fresh).decode()}
                erasures += 1
        for path in sorted(Path(settings.quarantine_dir).glob("*.sealed")):
            fresh = again(path.read_bytes(), path.stem.encode(), RECORD_QUARANTINE)
            if fresh is not None:
                atomic_write(path, fresh)
                files += 1
    return entries, files, erasures


def rotate_broker_key(settings: Settings | None = None) -> BrokerReseal:
    """A new honest-broker key pair; everything sealed to the old one is re-sealed to it.
    Needs the broker's private key (run where the broker key is mounted)."""
    settings = settings or get_settings()
    old = load_broker(settings)
    pending = keys_dir(settings) / "broker.key.next"
    if not pending.exists():
        write_secret_file(pending, secrets.token_bytes(32))
    new = Broker.from_private(read_secret_file(pending))

    def unseal(sealed: bytes, aad: bytes, record: str) -> bytes:
        return old.unseal(sealed, aad, record=record)

    entries, files, erasures = _reseal_all(unseal, new.sealer, settings)
    write_secret_file(keys_dir(settings) / "broker.pub", new.public)
    pending.replace(keys_dir(settings) / "broker.key")
    return BrokerReseal(old.key_id, new.key_id, entries, files, erasures)


def migrate_broker_stores(
    legacy: Callable[[bytes, bytes], bytes], settings: Settings | None = None
) -> BrokerReseal:
    """Seal to the broker what an earlier release sealed under the project key (``legacy``
    decrypts that format). Needs only the broker's public key."""
    from governance.keyring import load_broker_sealer

    settings = settings or get_settings()
    sealer = load_broker_sealer(settings)

    def unseal(sealed: bytes, aad: bytes, record: str) -> bytes:
        if sealed.startswith(SEALED_MAGIC):
            raise KeyMissing("sealed to another broker key than the current one")
        return legacy(sealed, aad)

    entries, files, erasures = _reseal_all(unseal, sealer, settings)
    return BrokerReseal("project-key", sealer.key_id, entries, files, erasures)
