"""Attack: a broken-into serving or training container rewrites the audit history to make a revoked
model serve, with the keys docker/compose.yaml mounts in it.

The attacker holds what that container holds: write access to the catalog database (every
service's credentials allow it) and every key file compose mounts under /run/radgate-keys (read
here from compose.yaml itself, so that the test follows what is deployed). On a promoted, then
revoked model they delete the revoke and demote rows and the revoke tag, set the serving alias
again, re-chain the remaining rows, sign every row and a new head anchor with the key they hold
(``tests/security/test_audit_writers.py``'s attack, there with the gateway's keys).

- While serving and the training cluster mounted the governance writer's ``audit-signing.key``
  that worked (the revoked model served); the control test shows it still does for that key.
- With their own writer keys (``audit-writer.key``: serving's ``serve.``/``ups.``/feedback/drift
  entries, training's ``train.``/``model.register``/retrain/explain entries) it does not: the
  governance rows they re-sign are out of scope and the head they sign is no anchor. A forged
  governance entry appended behind the library's back is reported ``forged``.
- Their own entries still verify, and their gates (which sign no anchor) decide on the governance
  writers' signed head, read from ``RADGATE_AUDIT_HEAD``: a fresh ``radgate model gate`` holding
  only serving's or training's keys allows an approved model and refuses the revoked one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from governance.approvals import Gate, Workflow
from governance.audit import AuditLog
from governance.audit.chain import ChainGuard
from governance.audit.entries import AuditError
from governance.keyring import (
    ARTIFACT_DIGEST,
    SERVICE_WRITERS,
    SERVING_STORE,
    ensure_service_writers,
    keys_dir,
    load_audit_signer,
    load_audit_verifier,
    load_store_key,
)
from governance.settings import Settings
from governance.testing import approved_version, create_cast
from tests.security.test_audit_writers import _forge_approval, _rewrite_history
from tests.security.test_gate_chain import ALIAS, NAME, _erase_revocation, _promoted_then_revoked
from tests.unit.test_approval_workflow import mlflow_template, registry

__all__ = ["mlflow_template", "registry"]  # fixtures shared with the workflow tests

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
KEYS_DIR = "/run/radgate-keys/"
# compose service -> the restricted writer it should be (governance.keyring.SERVICE_WRITERS)
SERVICES = {"serving": "serving", "ray-head": "training"}
# an entry each writes in its own right
OWN = {
    "serving": ("serve.predict", "model:cxr-attack/1"),
    "training": ("model.register", "model:cxr-attack/9"),
}


def _mounted_keys(service: str, tmp_path: Path) -> Path:
    """The key files compose mounts in ``service``, made as make-secrets.sh makes them (this test's
    keys directory, with the services' writers registered) and placed in a directory of their own
    under the names compose gives them. Returns that directory."""
    load_audit_signer()  # the governance writer's pair (this test's home)
    ensure_service_writers()  # audit-writer-NAME.key and audit-writers.json, as make-secrets.sh
    for purpose in (SERVING_STORE, ARTIFACT_DIGEST):
        load_store_key(purpose)
    compose = yaml.safe_load(COMPOSE.read_text())
    files = {name: Path(spec["file"]).name for name, spec in compose["secrets"].items()}
    directory = tmp_path / f"{service}-keys"
    directory.mkdir()
    for secret in compose["services"][service]["secrets"]:
        if isinstance(secret, dict) and secret["target"].startswith(KEYS_DIR):
            made = keys_dir() / files[secret["source"]]
            if made.exists():  # (project.key.id, the pseudonym key's public id, is not needed here)
                shutil.copy2(made, directory / Path(secret["target"]).name)
    return directory


def _service_settings(directory: Path) -> Settings:
    return Settings(key_file=directory / "project.key", project_key=None)


def _service_log(directory: Path) -> AuditLog:
    """The audit log as the service's process opens it: its keys, and the governance writers'
    signed head (RADGATE_AUDIT_HEAD), which this process only reads."""
    settings = _service_settings(directory)
    return AuditLog(
        signer=load_audit_signer(settings, create=False),
        verifier=load_audit_verifier(settings, create=False),
        head_file=AuditLog().head_file,
    )


def _gate_as(directory: Path, token: str, head: Path) -> subprocess.CompletedProcess[str]:
    """``radgate model gate`` in a fresh process holding only the service's key files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADGATE_PROJECT_KEY")}
    env.update(
        RADGATE_KEY_FILE=str(directory / "project.key"),
        RADGATE_AUDIT_HEAD=str(head),
        RADGATE_TOKEN=token,
    )
    return subprocess.run(
        [sys.executable, "-m", "radgate", "model", "gate", NAME, "--alias", ALIAS],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_the_governance_writers_key_rewrites_history_control(registry: object) -> None:
    """What serving or training could do while they held ``audit-signing.key``."""
    version, _ = _promoted_then_revoked(registry)
    _erase_revocation(registry, version)
    _rewrite_history(load_audit_signer(), AuditLog().head_file)
    assert Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_services_mounted_keys_cannot_rewrite_governance_history(
    registry: object, tmp_path: Path, service: str
) -> None:
    version, _ = _promoted_then_revoked(registry)
    directory = _mounted_keys(service, tmp_path)
    assert "audit-signing.key" not in {p.name for p in directory.iterdir()}, f"{service} holds it"
    signer = load_audit_signer(_service_settings(directory), create=False)
    assert signer.scope == SERVICE_WRITERS[SERVICES[service]]

    # The attack, with everything the container holds (and the head file it reads, as if it could
    # write that too: read-only in compose).
    _erase_revocation(registry, version)
    _rewrite_history(signer, AuditLog().head_file)
    decision = Gate(registry)(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not decision.allowed
    assert any("audit chain" in reason for reason in decision.reasons), decision.reasons
    # Nor does the service's own gate (its keys, the governance head) let it serve.
    own = Gate(registry, audit=_service_log(directory))(NAME, ALIAS, fresh=True)  # type: ignore[arg-type]
    assert not own.allowed


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_services_key_signs_no_governance_entry_and_no_anchor(
    registry: object, tmp_path: Path, service: str
) -> None:
    """The library refuses; written behind its back, the entry is forged and the gate fails closed."""
    version, _ = _promoted_then_revoked(registry)
    directory = _mounted_keys(service, tmp_path)
    log = _service_log(directory)
    for action in ("model.approve", "model.promote", "model.registered", "policy.sign", "user.add"):
        with pytest.raises(AuditError, match="may not sign"):
            log.append("doc", action, f"model:{NAME}/{version}")
    with pytest.raises(AuditError, match="signs no anchor"):
        log.signed_anchor(1, "0" * 64, datetime.now(UTC).isoformat())

    seq = _forge_approval(log.signer, version)
    report = AuditLog().verify()
    assert not report.ok and report.problem == "forged" and report.first_bad_seq == seq
    assert not Gate(registry)(NAME, ALIAS, fresh=True).allowed  # type: ignore[arg-type]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_services_own_entries_verify_and_its_gate_reads_the_governance_head(
    registry: object, tmp_path: Path, service: str
) -> None:
    """Holding only its mounted keys: the service writes its own entries (no head: it signs none),
    they verify in every chain walk, and a fresh gate process of that service, reading the
    governance writers' head, allows the approved model; revoked, it refuses; without the
    governance head it fails closed."""
    cast = create_cast()
    version = approved_version(registry, NAME, ALIAS, cast)  # type: ignore[arg-type]
    directory = _mounted_keys(service, tmp_path)
    held = sorted(p.name for p in directory.iterdir())
    log = _service_log(directory)
    head_file = AuditLog().head_file
    anchored = head_file.read_bytes()
    action, target = OWN[SERVICES[service]]
    for _ in range(3):
        log.append("radgate-service", action, target, {"request": "r1"})
    assert head_file.read_bytes() == anchored  # a restricted writer signs no head
    assert AuditLog().verify().ok
    ChainGuard(AuditLog()).check()
    ChainGuard(log).check()
    signer = log.signer
    assert [e.key_id for e in AuditLog().entries(action=action)][-3:] == [signer.key_id] * 3
    assert all(load_audit_verifier().permits(signer.key_id, a) for a in SERVICE_WRITERS[SERVICES[service]]
               if not a.endswith("."))  # fmt: skip

    allowed = _gate_as(directory, cast.tokens["admin"], head_file)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert json.loads(allowed.stdout)["allowed"] is True
    assert not (tmp_path / "no-head.json").exists()
    missing = _gate_as(directory, cast.tokens["admin"], tmp_path / "no-head.json")
    assert missing.returncode == 1 and "anchor" in missing.stdout, missing.stdout + missing.stderr

    Workflow(registry).revoke(cast["doc"], NAME, version, "recalled")  # type: ignore[arg-type]
    revoked = _gate_as(directory, cast.tokens["admin"], head_file)
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    # It never makes itself a governance key (a read-only mount in compose; writable here).
    made = {p.name for p in directory.iterdir()} - set(held)
    assert not {n for n in made if n.startswith("audit")}, made
