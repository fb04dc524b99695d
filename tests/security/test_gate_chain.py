"""Attack: make a revoked model serve again by rewriting history in the catalog and MLflow.

The attacker holds write access to the catalog database and to the MLflow registry (the
people or services that administer them), not the audit writer's signing key. On a promoted
model they revoke (or find it revoked), then delete the revoke and demote audit rows and the
revoke tag, and set the serving alias again: the registry then looks exactly as before the
revocation. The gate must still refuse, because the audit chain no longer reaches the signed
head anchored outside the database. Variants: reorder rows, truncate, delete a middle row,
put a forged or an old head anchor in place of the newest one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from governance.approvals import Gate, Workflow
from governance.audit import AuditLog
from governance.settings import get_settings
from governance.testing import approved_version, create_cast
from tests.unit.test_approval_workflow import mlflow_template, registry

NAME = "cxr-attack"
ALIAS = "production"


__all__ = ["mlflow_template", "registry"]  # fixtures shared with the workflow tests


def _db() -> sqlite3.Connection:
    return sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)


def _gate_cli() -> subprocess.CompletedProcess[str]:
    """``radgate model gate`` in a fresh process, as an operator (or serving at start) asks."""
    return subprocess.run(
        [sys.executable, "-m", "radgate", "model", "gate", NAME, "--alias", ALIAS],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "RADGATE_TOKEN": _ADMIN_TOKEN[0]},
    )


_ADMIN_TOKEN: list[str] = [""]


def _promoted_then_revoked(registry: object) -> tuple[str, int]:
    """A promoted version, revoked; returns the version and the head seq before the revoke."""
    cast = create_cast()
    _ADMIN_TOKEN[0] = cast.tokens["admin"]
    version = approved_version(registry, NAME, ALIAS, cast)  # type: ignore[arg-type]
    assert Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]
    head_before = AuditLog().head()
    assert head_before is not None
    Workflow(registry).revoke(cast["doc"], NAME, version, "wrong site calibration")  # type: ignore[arg-type]
    assert not Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]
    return version, head_before.seq


def _erase_revocation(registry: object, version: str) -> None:
    """The attack of the issue: delete the revoke/demote rows and the revoke tag, re-set the alias."""
    db = _db()
    db.execute(
        "DELETE FROM audit_log WHERE action IN ('model.revoke', 'model.demote') AND target = ?",
        (f"model:{NAME}/{version}",),
    )
    mv = registry.get_model_version(NAME, version)  # type: ignore[attr-defined]
    for key, value in (mv.tags or {}).items():
        if key.startswith("radgate.decision.") and json.loads(value).get("decision") == "revoke":
            registry.delete_model_version_tag(NAME, version, key)  # type: ignore[attr-defined]
    registry.set_registered_model_alias(NAME, ALIAS, version)  # type: ignore[attr-defined]
    registry.set_model_version_tag(  # type: ignore[attr-defined]
        NAME, version, "radgate.status", f"approved; serving as {ALIAS}"
    )


def test_deleting_the_revocation_rows_and_tag_keeps_the_model_refused(registry: object) -> None:
    version, _ = _promoted_then_revoked(registry)
    _erase_revocation(registry, version)
    # Nothing left in the registry or the remaining rows says "revoked"...
    remaining = [e.action for e in AuditLog().entries(target=f"model:{NAME}/{version}")]
    assert "model.revoke" not in remaining and "model.demote" not in remaining
    # ...yet the gate refuses, in this process and in a fresh one.
    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert any("audit chain" in reason for reason in decision.reasons), decision.reasons
    cli = _gate_cli()
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["allowed"] is False


def test_truncating_the_newest_rows_is_refused(registry: object) -> None:
    _promoted_then_revoked(registry)
    head = AuditLog().head()
    assert head is not None
    _db().execute("DELETE FROM audit_log WHERE seq = ?", (head.seq,))
    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed and "truncated" in " ".join(decision.reasons)


def test_reordering_rows_is_refused(registry: object) -> None:
    """Swap the revoke row with the row before it (seq numbers exchanged, content intact)."""
    version, _ = _promoted_then_revoked(registry)
    db = _db()
    revoke_seq = db.execute(
        "SELECT seq FROM audit_log WHERE action = 'model.revoke' AND target = ?", (f"model:{NAME}/{version}",)
    ).fetchone()[0]
    db.execute("UPDATE audit_log SET seq = -1 WHERE seq = ?", (revoke_seq,))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (revoke_seq, revoke_seq - 1))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = -1", (revoke_seq - 1,))
    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert _gate_cli().returncode == 1


def test_deleting_a_middle_row_is_refused_even_after_verification_was_cached(registry: object) -> None:
    _promoted_then_revoked(registry)
    gate = Gate(registry, ttl_s=0)  # type: ignore[arg-type]
    assert not gate(NAME, ALIAS).allowed  # verifies the chain and caches the position
    _db().execute("DELETE FROM audit_log WHERE action = 'model.revoke'")
    decision = gate(NAME, ALIAS)
    assert not decision.allowed and "deleted" in " ".join(decision.reasons)


def test_a_forged_head_anchor_is_refused(registry: object) -> None:
    """After deleting the revocation rows the attacker writes a head anchor naming the new
    (shorter) head, signed with a key of their own."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from governance.audit import canonical_json

    version, _ = _promoted_then_revoked(registry)
    _erase_revocation(registry, version)
    db = _db()
    seq, digest = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    mallory = Ed25519PrivateKey.generate()
    body = {"kind": "head", "seq": seq, "hash": digest, "ts": "2026-01-01T00:00:00+00:00"}
    forged = {**body, "key_id": "0" * 16, "sig": mallory.sign(canonical_json(body)).hex()}
    (get_settings().home / "audit" / "head.json").write_text(json.dumps(forged))
    assert not Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]
    assert _gate_cli().returncode == 1
    (get_settings().home / "audit" / "head.json").unlink()  # or no anchor at all
    assert not Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]
    assert _gate_cli().returncode == 1


def test_an_old_signed_head_anchor_put_back_is_refused(
    registry: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker keeps a genuine signed head from before the revocation, truncates the log
    to it and puts it back: a gate that saw the newer head, and the external witness, refuse."""
    witness = tmp_path / "witness" / "audit-heads.log"
    monkeypatch.setenv("RADGATE_AUDIT_WITNESS", str(witness))
    get_settings.cache_clear()
    cast = create_cast()
    _ADMIN_TOKEN[0] = cast.tokens["admin"]
    version = approved_version(registry, NAME, ALIAS, cast)  # type: ignore[arg-type]
    head_file = get_settings().home / "audit" / "head.json"
    old_anchor = head_file.read_bytes()
    old_seq = json.loads(old_anchor)["seq"]
    running = Gate(registry, ttl_s=0)  # type: ignore[arg-type]
    assert running(NAME, ALIAS).allowed
    Workflow(registry).revoke(cast["doc"], NAME, version, "recall")  # type: ignore[arg-type]
    assert not running(NAME, ALIAS).allowed
    # the attack: back to the state of old_anchor, in the catalog, the anchor file and MLflow
    _db().execute("DELETE FROM audit_log WHERE seq > ?", (old_seq,))
    head_file.write_bytes(old_anchor)
    _erase_revocation(registry, version)
    assert not running(NAME, ALIAS).allowed  # the running gate saw a newer head
    assert witness.exists()
    assert _gate_cli().returncode == 1  # a fresh process: the witness has seen a newer head


def test_an_untampered_chain_still_allows(registry: object) -> None:
    """The control: the same checks pass on an honest log, incrementally, across appends."""
    cast = create_cast()
    _ADMIN_TOKEN[0] = cast.tokens["admin"]
    approved_version(registry, NAME, ALIAS, cast)  # type: ignore[arg-type]
    gate = Gate(registry, ttl_s=0)  # type: ignore[arg-type]
    assert gate(NAME, ALIAS).allowed
    AuditLog().append("svc", "inference", f"model:{NAME}/1", {"n": 1})
    assert gate(NAME, ALIAS).allowed
    cli = _gate_cli()
    assert cli.returncode == 0, cli.stdout + cli.stderr
