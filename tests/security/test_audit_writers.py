"""Attack: a broken-into intake service rewrites the audit history to make a revoked model serve.

The attacker holds what the gateway holds: write access to the catalog database (every service's
credentials allow it) and the gateway's audit key. On a promoted, then revoked model they delete
the revoke and demote rows and the revoke tag, set the serving alias again, and then do what
the database administrator of tests/security/test_gate_chain.py cannot: re-chain the remaining
rows (new hashes and links), sign every row and a new head anchor with the key they hold.

- With the audit writer's key (``audit-signing.key``, which every writer held before writer keys
  existed) that works: the gate allows the revoked model (the control below).
- With the gateway's own writer key (``audit-writer.key``, registered for ``gateway.`` and
  ``ingest.`` only) it does not: the governance rows it re-signed are out of its scope and the
  head it signed is no anchor, so the gate refuses. Its legitimate entries still verify, and the
  library refuses to let it sign a governance action at all.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from governance.approvals import Gate
from governance.audit import AuditLog
from governance.audit.chain import ChainGuard
from governance.audit.entries import GENESIS_HASH, AuditError, canonical_json, entry_hash
from governance.keyring import AuditSigner, keys_dir, load_audit_signer, register_audit_writer
from governance.settings import Settings
from tests.security.test_gate_chain import ALIAS, NAME, _db, _erase_revocation, _promoted_then_revoked
from tests.unit.test_approval_workflow import mlflow_template, registry

__all__ = ["mlflow_template", "registry"]  # fixtures shared with the workflow tests

_ENTRY = b"radgate-audit-entry-v2\0"  # what an entry's signature covers (governance.audit.log)
_ANCHOR = b"radgate-audit-anchor-v2\0"  # what a head anchor's signature covers


def _gateway_keys(tmp_path: Path) -> Settings:
    """The gateway's keys directory as deployed: its writer key, the public halves, no
    ``audit-signing.key``; returns settings that read it."""
    written = register_audit_writer("gateway", ("gateway.", "ingest."))
    directory = tmp_path / "gateway-keys"
    directory.mkdir()
    shutil.copy2(written, directory / "audit-writer.key")
    for name in ("audit-signing.pub", "audit-writers.json"):
        shutil.copy2(keys_dir() / name, directory / name)
    return Settings(key_file=directory / "project.key")


def _rewrite_history(signer: AuditSigner, head_file: Path) -> None:
    """Re-chain every row after the deletions (seq 1..n, new hashes and links), sign each row and
    a new head anchor with ``signer``'s key: what someone holding that key and the database does."""
    db = _db()
    rows = db.execute(
        "SELECT seq, ts, actor, role, action, target, details FROM audit_log ORDER BY seq"
    ).fetchall()
    db.execute("DELETE FROM audit_log")
    prev = GENESIS_HASH
    for seq, (_, ts, actor, role, action, target, details) in enumerate(rows, start=1):
        digest = entry_hash(seq, ts, actor, role, action, target, json.loads(details), prev)
        db.execute(
            "INSERT INTO audit_log (seq, ts, actor, role, action, target, details, prev_hash, hash,"
            " key_id, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, actor, role, action, target, details, prev, digest, signer.key_id,
             signer.sign(_ENTRY + digest.encode())),
        )  # fmt: skip
        prev = digest
    body = {"kind": "head", "seq": len(rows), "hash": prev, "ts": datetime.now(UTC).isoformat()}
    anchor = {**body, "key_id": signer.key_id, "sig": signer.sign(_ANCHOR + canonical_json(body))}
    head_file.write_text(json.dumps(anchor))


def _forge_approval(signer: AuditSigner, version: str) -> int:
    """Append a ``model.approve`` of ``version`` signed with ``signer`` straight to the table,
    chained to the head (bypassing the library's refusal); returns its seq."""
    head = AuditLog().head()
    assert head is not None
    ts = datetime.now(UTC).isoformat(timespec="microseconds")
    details = {"comment": "re-approved"}
    digest = entry_hash(head.seq + 1, ts, "doc", "clinical-reviewer", "model.approve",
                        f"model:{NAME}/{version}", details, head.hash)  # fmt: skip
    _db().execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (head.seq + 1, ts, "doc", "clinical-reviewer", "model.approve", f"model:{NAME}/{version}",
         json.dumps(details), head.hash, digest, signer.key_id, signer.sign(_ENTRY + digest.encode())),
    )  # fmt: skip
    return head.seq + 1


def test_the_audit_writers_key_rewrites_history_control(registry: object) -> None:
    """What any service could do while it held ``audit-signing.key``: the revoked model serves."""
    version, _ = _promoted_then_revoked(registry)
    _erase_revocation(registry, version)
    _rewrite_history(load_audit_signer(), AuditLog().head_file)
    assert Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]


def test_the_gateways_writer_key_cannot_rewrite_governance_history(registry: object, tmp_path: Path) -> None:
    version, _ = _promoted_then_revoked(registry)
    gateway_settings = _gateway_keys(tmp_path)
    gateway_signer = load_audit_signer(gateway_settings, create=False)
    assert gateway_signer.scope == ("gateway.", "ingest.")
    gateway_log = AuditLog(signer=gateway_signer)

    # Its own entries are written and verify in the gate's chain; a governance entry is refused.
    gateway_log.append("ae:ORTHANC", "gateway.c-store", "dimse:10.0.0.5", {"stored": 1, "failed": 0})
    ChainGuard(AuditLog()).check()
    with pytest.raises(AuditError, match=r"may not sign model\.approve"):
        gateway_log.append("doc", "model.approve", f"model:{NAME}/{version}")

    # The attack, with everything the gateway holds.
    _erase_revocation(registry, version)
    _rewrite_history(gateway_signer, AuditLog().head_file)
    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert any("audit chain" in reason for reason in decision.reasons), decision.reasons


def test_a_writer_out_of_its_scope_is_a_forged_entry(registry: object, tmp_path: Path) -> None:
    """Without touching older rows: the gateway's key appends a forged governance entry
    directly to the table (bypassing the library's refusal). The chain walk calls it forged."""
    version, _ = _promoted_then_revoked(registry)
    gateway_signer = load_audit_signer(_gateway_keys(tmp_path), create=False)
    seq = _forge_approval(gateway_signer, version)
    report = AuditLog().verify()
    assert not report.ok and report.problem == "forged" and report.first_bad_seq == seq
    assert not Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]


def test_a_gateway_holding_only_its_keys_stores_and_its_entries_verify(
    start_gateway: Any, as_role: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``radgate gateway`` as compose runs it: keys from its own directory (project.key,
    broker.pub, its writer key, the public halves), no audit-signing.key, no key in its
    environment. It stores, and its entries (signed with its writer key) verify in the chain."""
    from governance.keyring import load_audit_verifier, load_broker_sealer
    from governance.settings import get_settings
    from tests.integration.conftest import gateway_config, write_ct_series
    from tests.security.test_tls import _echo_and_store, _stored

    as_role("data-steward")  # the gateway's operator (audited here, with the audit writer's key)
    load_broker_sealer()  # the broker's pair in the test's home: the gateway gets the public half
    directory = _gateway_keys(tmp_path).resolved_key_file.parent
    shutil.copy2(keys_dir() / "broker.pub", directory / "broker.pub")
    (directory / "project.key").write_text("11" * 32 + "\n")  # the test suite's pseudonym key
    with monkeypatch.context() as gateway_env:  # what the gateway process inherits
        gateway_env.delenv("RADGATE_PROJECT_KEY")
        gateway_env.setenv("RADGATE_KEY_FILE", str(directory / "project.key"))
        gateway = start_gateway(gateway_config(http={"enabled": False}))
    get_settings.cache_clear()
    files = write_ct_series(tmp_path / "ct", 2)
    assert _echo_and_store(gateway.dicom_port, files, None) == (0, [0, 0])
    assert _stored() == 2
    gateway.terminate()

    writer = load_audit_signer(Settings(key_file=directory / "project.key", project_key=None), create=False)
    entries = AuditLog().entries(action="gateway.c-store")
    assert [e.key_id for e in entries] == [writer.key_id]
    assert AuditLog().verify().ok
    ChainGuard(AuditLog()).check()
    assert load_audit_verifier().permits(writer.key_id, "gateway.c-store")
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["audit-writer.key", "audit-signing.pub", "audit-writers.json", "broker.pub", "project.key"]
    )  # nothing created beside what it was given
