"""Project key (HMAC sub-keys, sealing to the broker, key file), content store, catalog migrations."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import inspect

from governance.catalog import Catalog
from governance.keys import KeyError_, ProjectKey, load_project_key
from governance.settings import Settings, get_settings
from imaging.store import ContentStore, StoreError


def test_seal_roundtrip_and_tamper_detection() -> None:
    key = ProjectKey(b"\x01" * 32)
    sealed = key.seal(b"DOE^JANE", associated=b"lookup")
    assert b"DOE" not in sealed
    assert key.unseal(sealed, b"lookup") == b"DOE^JANE"
    with pytest.raises(KeyError_):
        key.unseal(sealed, b"other-aad")
    with pytest.raises(KeyError_):  # the record type is bound too
        key.unseal(sealed, b"lookup", record="feedback-comment")
    from governance.keyring import Broker

    other_broker = Broker.from_private(b"\x03" * 32)
    with pytest.raises(KeyError_):  # only the broker's private key unseals, not the project key
        ProjectKey(b"\x01" * 32, sealer=other_broker).unseal(sealed, b"lookup")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(KeyError_):
        key.unseal(bytes(tampered), b"lookup")


def test_sub_keys_are_separated_and_key_id_is_stable() -> None:
    key = ProjectKey(b"\x01" * 32)
    assert key.derive("uid") != key.derive("date")
    assert key.mac("uid", b"x") != key.mac("date", b"x")
    assert key.key_id == ProjectKey(b"\x01" * 32).key_id != ProjectKey(b"\x02" * 32).key_id
    assert "secret" not in repr(key) or "\\x01" not in repr(key)
    with pytest.raises(KeyError_):
        ProjectKey(b"short")


def test_key_file_created_once_with_private_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RADGATE_PROJECT_KEY")
    settings = Settings(home=tmp_path / "home")
    first = load_project_key(settings)
    path = settings.resolved_key_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_project_key(settings).key_id == first.key_id
    path.write_text("not hex")
    with pytest.raises(KeyError_):
        load_project_key(settings)
    with pytest.raises(KeyError_):
        load_project_key(Settings(home=tmp_path / "empty"), create=False)


def test_env_key_overrides_file() -> None:
    assert load_project_key(get_settings()).secret == bytes.fromhex("11" * 32)


def test_content_store_is_addressed_by_hash(tmp_path: Path) -> None:
    store = ContentStore(str(tmp_path / "store"))
    key = store.put(b"abc")
    assert store.put(b"abc") == key and store.get(key) == b"abc"
    store.path(key).write_bytes(b"tampered")
    with pytest.raises(StoreError, match="does not match"):
        store.get(key)
    with pytest.raises(StoreError):
        store.get("0" * 64)
    with pytest.raises(StoreError):
        store.get("../../etc/passwd")


def test_catalog_migrates_to_every_head(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.upgrade()
    catalog.upgrade()  # idempotent
    tables = set(inspect(catalog.engine).get_table_names())
    assert {"instances", "quarantine", "lineage", "pseudonyms", "alembic_version"} <= tables


def test_a_service_without_the_pseudonym_key_reads_its_public_id(tmp_path: Path) -> None:
    """Training checks which key pseudonymised a dataset and holds no key: the id file beside
    the key's path (written when the key is made; deployment scripts write it) is enough; with
    neither it is refused, never made up."""
    from governance.keys import KeyError_, key_id_path, load_project_key, project_key_id
    from governance.settings import Settings

    holder = Settings(key_file=tmp_path / "gateway" / "project.key", project_key=None)
    (tmp_path / "gateway").mkdir()
    key = load_project_key(holder)  # made here, with its id beside it
    assert key_id_path(holder).read_text().strip() == key.key_id == project_key_id(holder)
    trainer = Settings(key_file=tmp_path / "trainer" / "project.key", project_key=None)
    (tmp_path / "trainer").mkdir()
    with pytest.raises(KeyError_):
        project_key_id(trainer)
    key_id_path(trainer).write_text(key_id_path(holder).read_text())
    assert project_key_id(trainer) == key.key_id
    assert not (tmp_path / "trainer" / "project.key").exists()  # the id never makes a key
    key_id_path(trainer).write_text("not an id\n")
    with pytest.raises(KeyError_):
        project_key_id(trainer)
