"""The MACed record of an artifact's hash: used only while it is authentic and every file is the
one recorded, unchanged; never written for files that changed in the last moments."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from governance.approvals.digests import SETTLE_S, hash_and_record, record_path, recorded_sha256
from governance.keyring import keys_dir
from governance.tags import artifact_sha256


def _settle(root: Path) -> None:
    """Wait until every file of ``root`` was last changed at least SETTLE_S ago."""
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in root.rglob("*") if p.is_file())
    remaining = (newest + int(SETTLE_S * 1e9) - time.time_ns()) / 1e9
    if remaining > 0:
        time.sleep(remaining + 0.05)


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "model.bin").write_bytes(b"weights v1" * 1000)
    (root / "MLmodel").write_text("flavors: {}\n")
    return root


def test_files_changed_just_now_are_hashed_but_not_recorded(artifact: Path) -> None:
    assert hash_and_record(artifact) == artifact_sha256(artifact)
    assert not record_path(artifact).exists()
    assert recorded_sha256(artifact) is None


def test_a_record_stands_only_while_authentic_and_the_files_are_unchanged(artifact: Path) -> None:
    _settle(artifact)
    digest = hash_and_record(artifact)
    assert recorded_sha256(artifact) == digest

    # A record rewritten by a process without the key does not verify.
    path = record_path(artifact)
    genuine = path.read_text()
    forged = json.loads(genuine)
    forged["sha256"] = "0" * 64
    path.write_text(json.dumps(forged))
    assert recorded_sha256(artifact) is None
    path.write_text(genuine)
    assert recorded_sha256(artifact) == digest

    # Without the key nothing is trusted.
    key = keys_dir() / "artifact-digest.key"
    kept = key.read_bytes()
    key.unlink()
    assert recorded_sha256(artifact) is None
    key.write_bytes(kept)
    assert recorded_sha256(artifact) == digest

    # The same number of bytes written over the weights, their modification time set back:
    # the status-change time moved, so the record no longer describes the file.
    weights = artifact / "model.bin"
    before = weights.stat()
    weights.write_bytes(b"weights v2" * 1000)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    assert recorded_sha256(artifact) is None
    assert artifact_sha256(artifact) != digest


def test_a_file_added_or_replaced_voids_the_record(artifact: Path) -> None:
    _settle(artifact)
    digest = hash_and_record(artifact)
    (artifact / "extra.py").write_text("print('hello')\n")
    assert recorded_sha256(artifact) is None
    (artifact / "extra.py").unlink()
    assert recorded_sha256(artifact) == digest
    replacement = artifact / "model.bin.new"
    replacement.write_bytes((artifact / "model.bin").read_bytes())
    replacement.replace(artifact / "model.bin")  # same bytes, another inode
    assert recorded_sha256(artifact) is None
