"""The broker's public key is read once per file version, and a replaced key is used at once.

Every quarantined input and every new original value is sealed to the honest broker; a worker's
project key loads ``broker.pub`` per seal (so that rotation reaches running workers). The cache
keeps that one ``stat`` instead of a read and parse, and must never keep sealing to a key that was
replaced on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from governance import keyring
from governance.keyring import Broker, load_broker, load_broker_sealer, write_secret_file
from governance.keys import ProjectKey
from governance.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(key_file=tmp_path / "keys" / "project.key", project_key=None)


def test_the_public_key_file_is_read_once_while_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    load_broker(settings, create=True)  # writes broker.key and broker.pub
    reads: list[Path] = []
    real = keyring.read_secret_file

    def counting(path: Path, length: int = 32) -> bytes:
        reads.append(path)
        return real(path, length)

    monkeypatch.setattr(keyring, "read_secret_file", counting)
    first = load_broker_sealer(settings, create=False)
    for _ in range(20):
        assert load_broker_sealer(settings, create=False) is first
    assert len(reads) <= 1


def test_a_replaced_broker_key_is_sealed_to_at_the_next_seal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    old = load_broker(settings, create=True)
    assert load_broker_sealer(settings, create=False).key_id == old.key_id
    public = tmp_path / "keys" / "broker.pub"
    new = Broker.from_private(os.urandom(32))
    write_secret_file(public, new.public)  # a rotation: a new file at the same path
    sealer = load_broker_sealer(settings, create=False)
    assert sealer.key_id == new.key_id
    sealed = sealer.seal(b"DOE^JANE", b"lookup", record="reid-map")
    assert new.unseal(sealed, b"lookup", record="reid-map") == b"DOE^JANE"


def test_a_project_key_without_a_held_sealer_follows_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path)
    monkeypatch.setattr("governance.keys.load_broker_sealer", lambda: load_broker_sealer(settings))
    first = load_broker(settings, create=True)
    key = ProjectKey(os.urandom(32))  # as a worker builds it: no sealer held
    assert key.seal_key_id == first.key_id
    second = Broker.from_private(os.urandom(32))
    write_secret_file(tmp_path / "keys" / "broker.pub", second.public)
    assert key.seal_key_id == second.key_id
    with pytest.raises(keyring.KeyMissing):
        first.unseal(key.seal(b"x", b"k"), b"k", record="reid-map")
