"""Attack: a service's restricted audit writer key leaks (a broken-into serving container) and is
used after the administrator revoked it.

The administrator runs ``radgate keys rotate --writer serving`` (a real CLI process, admin
token): a ``keys.writer.revoke`` entry signed by the governance writer, ``audit-writers.json``
marks the old key revoked and a new key is registered. The attacker kept a copy of the old key
and the catalog credentials and appends an entry in serving's own scope (``serve.predict``,
which the library signs without complaint: it does not know about revocations). Before this
change nothing could revoke a writer key: such an entry verified, and the gate relied on it.

Now ``radgate audit verify`` reports that entry ``forged`` (and only it: serving's entries
before the revocation and the new key's entries verify), the gate fails closed in process and in
a fresh ``radgate model gate``, also for a verifier whose copy of ``audit-writers.json`` predates
the revocation (the chain carries it) and for a guard that starts from a checkpoint past it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from governance.approvals import Gate
from governance.audit import AuditLog
from governance.audit.chain import ChainGuard, write_checkpoint
from governance.audit.entries import AuditError
from governance.keyring import (
    REVOKE_WRITER,
    SERVICE_WRITERS,
    AuditSigner,
    KeyMissing,
    active_audit_writer,
    ensure_service_writers,
    keys_dir,
    load_audit_signer,
    load_audit_verifier,
    read_audit_writers,
    read_secret_file,
)
from governance.settings import Settings
from governance.testing import approved_version, create_cast
from tests.security.test_erasure_cosign import _radgate
from tests.security.test_gate_chain import ALIAS, NAME
from tests.unit.test_approval_workflow import mlflow_template, registry

__all__ = ["mlflow_template", "registry"]  # fixtures shared with the workflow tests


def _serving_keys(tmp_path: Path, name: str) -> Path:
    """Serving's keys directory as deployed: its writer key as ``audit-writer.key`` and the
    public halves (a copy taken now: the attacker's, or a verifier not yet given the new files)."""
    directory = tmp_path / name
    directory.mkdir()
    shutil.copy2(keys_dir() / "audit-writer-serving.key", directory / "audit-writer.key")
    for public in ("audit-signing.pub", "audit-writers.json"):
        shutil.copy2(keys_dir() / public, directory / public)
    return directory


def _settings(directory: Path) -> Settings:
    return Settings(key_file=directory / "project.key", project_key=None)


def test_a_revoked_writer_keys_later_entries_are_forged_and_the_gate_fails_closed(
    registry: object, tmp_path: Path
) -> None:
    cast = create_cast()
    admin = cast.tokens["admin"]
    approved_version(registry, NAME, ALIAS, cast)  # type: ignore[arg-type]
    load_audit_signer()
    ensure_service_writers()
    stolen = _serving_keys(tmp_path, "stolen")  # what the attacker copied out of the container
    old_signer = load_audit_signer(_settings(stolen), create=False)
    assert old_signer.scope == SERVICE_WRITERS["serving"]
    serving_log = AuditLog(signer=old_signer, verifier=load_audit_verifier(_settings(stolen), create=False))
    before = serving_log.append("radgate-service", "serve.predict", f"model:{NAME}/1", {"request": "r1"})
    assert AuditLog().verify().ok

    rotated = _radgate("keys", "rotate", "--writer", "serving", token=admin)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    (revocation,) = AuditLog().entries(action=REVOKE_WRITER)
    assert revocation.details["key_id"] == old_signer.key_id and revocation.role == "admin"
    assert load_audit_verifier().unrestricted(revocation.key_id)  # the governance writer signed it
    new = active_audit_writer("serving")
    assert new.key_id != old_signer.key_id and new.actions == SERVICE_WRITERS["serving"]
    assert {w.key_id: w.revoked_after for w in read_audit_writers(Settings())}[old_signer.key_id] == (
        revocation.seq
    )
    with pytest.raises(KeyMissing, match="revoked"):  # an honest replica still mounting it stops
        load_audit_signer(_settings(_with_registry(stolen, tmp_path)), create=False)

    # The new key signs serving's entries; everything so far verifies (the old key's entry too).
    new_signer = AuditSigner(
        read_secret_file(keys_dir() / "audit-writer-serving.key"), SERVICE_WRITERS["serving"]
    )
    AuditLog(signer=new_signer).append(
        "radgate-service", "serve.predict", f"model:{NAME}/1", {"request": "r2"}
    )
    assert AuditLog().verify().ok
    guard = ChainGuard(AuditLog())
    guard.check()
    assert Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]
    write_checkpoint(AuditLog(), guard.verified)  # a later process starts past the revocation

    # The attack: the stolen key appends in its own scope, after its revocation.
    forged = serving_log.append("radgate-service", "serve.predict", f"model:{NAME}/1", {"request": "r3"})

    verified = _radgate("audit", "verify", token=admin)
    assert verified.returncode == 5, verified.stdout + verified.stderr
    assert f"forged at entry {forged.seq}" in verified.stdout + verified.stderr
    report = AuditLog().verify()
    assert not report.ok and report.problem == "forged" and report.first_bad_seq == forged.seq
    assert before.seq < revocation.seq < forged.seq

    for chain in (guard, ChainGuard(AuditLog())):  # cached position; from the checkpoint
        with pytest.raises(Exception, match="forged") as broken:
            chain.check()
        assert getattr(broken.value, "seq", None) == forged.seq
    # A verifier whose audit-writers.json predates the revocation learns it from the chain.
    stale = AuditLog(verifier=load_audit_verifier(_settings(stolen), create=False))
    assert stale.verify().problem == "forged"
    with pytest.raises(Exception, match="forged"):
        ChainGuard(stale).check()

    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert any("audit chain" in reason for reason in decision.reasons), decision.reasons
    gate = _radgate("model", "gate", NAME, "--alias", ALIAS, token=admin)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert json.loads(gate.stdout)["allowed"] is False


def test_a_restricted_writer_cannot_revoke_and_revoke_only_registers_no_key(
    registry: object, tmp_path: Path
) -> None:
    """A revocation entry counts only when the governance writer signed it (a restricted writer
    cannot revoke another service's key to make its entries look forged: out of scope), and
    ``--revoke-only`` leaves the service without a key until ``keys init`` makes one."""
    cast = create_cast()
    admin = cast.tokens["admin"]
    load_audit_signer()
    paths = ensure_service_writers()
    gateway = AuditSigner(read_secret_file(paths["gateway"]), SERVICE_WRITERS["gateway"])
    with pytest.raises(AuditError, match="may not sign"):
        AuditLog(signer=gateway).append("x", REVOKE_WRITER, "audit-writer:serving", {"key_id": "0" * 16})

    revoked = _radgate("keys", "rotate", "--writer", "training", "--revoke-only", token=admin)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert not (keys_dir() / "audit-writer-training.key").exists()
    with pytest.raises(KeyMissing):
        active_audit_writer("training")
    again = _radgate("keys", "rotate", "--writer", "training", token=admin)
    assert again.returncode != 0  # nothing left to revoke
    unknown = _radgate("keys", "rotate", "--writer", "nobody", token=admin)
    assert unknown.returncode != 0
    assert AuditLog().verify().ok
    assert ensure_service_writers()["training"].exists()  # keys init registers a new one
    assert active_audit_writer("training").revoked_after is None


def _with_registry(directory: Path, tmp_path: Path) -> Path:
    """``directory``'s writer key beside the current ``audit-writers.json`` (a replica given the
    new registry but still mounting the old key)."""
    updated = tmp_path / "updated"
    updated.mkdir()
    shutil.copy2(directory / "audit-writer.key", updated / "audit-writer.key")
    for public in ("audit-signing.pub", "audit-writers.json"):
        shutil.copy2(keys_dir() / public, updated / public)
    return updated
