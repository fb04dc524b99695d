"""``radgate keys rotate``: a new encryption key for everything sealed, pseudonyms unchanged.

Re-seals the catalog's map of originals and the quarantined inputs under a fresh key, then
makes it the current ``keys/seal.key``; the retired key is removed once nothing needs it.
The HMAC key that derives UIDs, pseudonyms and date shifts is not touched (rotating it would
change every pseudonym and break longitudinal linkage).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from governance.audit import record
from governance.catalog import Pseudonym, open_catalog
from governance.keys import load_project_key, seal_key_path, write_secret_file
from governance.settings import Settings, get_settings
from imaging.store import atomic_write

__all__ = ["Rotation", "rotate_seal_key"]


@dataclass(frozen=True)
class Rotation:
    old_key_id: str
    new_key_id: str
    map_entries: int
    quarantined_files: int


def rotate_seal_key(actor: str, role: str, settings: Settings | None = None) -> Rotation:
    settings = settings or get_settings()
    old = load_project_key(settings, create=False)
    new = old.with_seal_secret(secrets.token_bytes(32))
    pending = seal_key_path(settings).with_name("seal.key.next")
    # The next key is on disk before anything is sealed with it: a crash never loses data.
    write_secret_file(pending, new.seal_secret or b"")
    count = 0
    with open_catalog(settings).session() as session:
        for row in session.scalars(select(Pseudonym)):
            plain = old.unseal(row.sealed_original, row.lookup.encode())
            row.sealed_original = new.seal(plain, row.lookup.encode())
            count += 1
        files = 0
        for path in sorted(Path(settings.quarantine_dir).glob("*.sealed")):
            aad = path.stem.encode()
            atomic_write(path, new.seal(old.unseal(path.read_bytes(), aad), aad))
            files += 1
        # committed with the session: the map and the files now need only the new key
    pending.replace(seal_key_path(settings))
    rotation = Rotation(old.seal_key_id, new.seal_key_id, count, files)
    record(
        actor,
        "keys.rotate",
        f"seal-key:{new.seal_key_id}",
        {"retired": old.seal_key_id, "map_entries": count, "quarantined_files": files},
        role=role,
    )
    return rotation
