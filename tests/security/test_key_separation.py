"""Holding one key does not give the others.

Before, every sub-key (pseudonyms, sealing, audit MACs, CSRF) was derived from one project
secret mounted in every service. Now each purpose has its own random key file: these tests
take the position of a service that holds some of them and check what it cannot do.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from governance.audit import AuditLog, canonical_json
from governance.keyring import (
    SERVING_STORE,
    UI_SESSION,
    KeyMissing,
    keys_dir,
    load_broker,
    load_store_key,
)
from governance.keys import KeyError_, load_project_key
from governance.settings import get_settings


def _hide(name: str) -> Path:
    """Take a key file away from this process (as a service that is not given it)."""
    path = keys_dir() / name
    hidden = path.with_name(name + ".elsewhere")
    shutil.move(path, hidden)
    return hidden


def test_a_service_with_the_pseudonym_key_and_broker_public_key_cannot_unseal() -> None:
    key = load_project_key()  # what an ingest service holds: project.key + broker.pub
    sealed = key.seal(b"DOE^JANE", b"lookup-1")
    assert key.unseal(sealed, b"lookup-1") == b"DOE^JANE"  # here the broker key is present too
    hidden = _hide("broker.key")
    with pytest.raises(KeyError_):
        load_project_key().unseal(sealed, b"lookup-1")
    with pytest.raises(KeyMissing):  # and it will not make itself a broker key either
        load_broker(create=True)
    # the old derivation from the project secret opens nothing any more
    with pytest.raises(KeyError_):
        key.legacy_unseal(sealed, b"lookup-1")
    shutil.move(hidden, keys_dir() / "broker.key")
    assert load_broker().unseal(sealed, b"lookup-1", record="reid-map") == b"DOE^JANE"


def test_sealed_records_are_bound_to_their_record_type() -> None:
    key = load_project_key()
    sealed = key.seal(b"reason: patient asked", b"erasure-1", record="erasure-reason")
    with pytest.raises(KeyError_):
        key.unseal(sealed, b"erasure-1", record="reid-map")
    assert key.unseal(sealed, b"erasure-1", record="erasure-reason") == b"reason: patient asked"


def test_every_other_key_does_not_forge_an_audit_entry() -> None:
    """A service holding project, broker, serving and UI keys (not the audit signing key)
    rebuilds the newest entry the old way (HMAC of a key it holds) and with its own Ed25519
    key: verification and the gate's chain check name it forged."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    log = AuditLog()
    for i in range(3):
        log.append("svc", "model.approve", f"model:m/{i}", {"i": i})
    db = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    for secret in (
        load_project_key().secret,
        load_broker().private,
        load_store_key(SERVING_STORE).secret,
        load_store_key(UI_SESSION).secret,
    ):
        row = db.execute("SELECT hash, key_id FROM audit_log WHERE seq = 3").fetchone()
        forged_mac = hmac.new(secret, row[0].encode(), hashlib.sha256).hexdigest()
        db.execute("UPDATE audit_log SET mac = ? WHERE seq = 3", (forged_mac,))
        assert AuditLog().verify().problem == "forged"
    mallory = Ed25519PrivateKey.generate()
    digest = db.execute("SELECT hash FROM audit_log WHERE seq = 3").fetchone()[0]
    signature = mallory.sign(b"radgate-audit-entry-v2\0" + digest.encode()).hex()
    db.execute("UPDATE audit_log SET mac = ? WHERE seq = 3", (signature,))
    report = AuditLog().verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "forged", 3)
    assert canonical_json({"a": 1}) == b'{"a":1}'


def test_a_verifier_holds_only_the_public_key_and_cannot_append() -> None:
    AuditLog().append("svc", "inference", "model:m/1")
    hidden = _hide("audit-signing.key")
    verifier_only = AuditLog()
    assert verifier_only.verify().ok  # verifying needs only audit-signing.pub
    from governance.audit import AuditError

    with pytest.raises(AuditError):
        verifier_only.append("svc", "inference", "model:m/2")
    assert not (keys_dir() / "audit-signing.key").exists()  # no stand-in key was created
    shutil.move(hidden, keys_dir() / "audit-signing.key")


def test_serving_records_open_only_with_the_serving_key(tmp_path: Path) -> None:
    from serving.monitoring.sealing import RECORD_INPUT

    store = load_store_key(SERVING_STORE)
    sealed = store.seal(b"DICM input", b"req-1", record=RECORD_INPUT)
    with pytest.raises(KeyError_):  # the honest broker's key does not open serving's records
        load_project_key().unseal(sealed, b"req-1", record=RECORD_INPUT)
    with pytest.raises(KeyMissing):
        load_store_key(UI_SESSION).unseal(sealed, b"req-1", record=RECORD_INPUT)
    assert store.unseal(sealed, b"req-1", record=RECORD_INPUT) == b"DICM input"


def test_csrf_tokens_come_from_the_ui_key_alone() -> None:
    from serving.ui.security import csrf_token

    before = csrf_token("rg_some-user-token")
    # Knowing the project secret (the old root) does not give the CSRF key.
    old_style = load_project_key().mac("ui-csrf", hashlib.sha256(b"rg_some-user-token").hexdigest().encode())
    assert old_style.hex() != before
    (keys_dir() / "ui-session.key").unlink()  # a new UI key: every old token is worthless
    assert csrf_token("rg_some-user-token") != before


def _run(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radgate", *args, "--token", token],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_keys_rotate_reseals_serving_stores_and_erasure_records() -> None:
    """Monitoring inputs, views and feedback comments under the serving key, and an erasure
    reason sealed to the broker, all move to the new keys; the old keys open none of them."""
    from governance.catalog import open_catalog
    from governance.keyring import RECORD_ERASURE, Broker
    from governance.testing import create_cast
    from imaging.compliance.models import ErasureRecord
    from serving.monitoring import FeedbackIn, LiveRecorder, submit_feedback
    from serving.monitoring.live import pending_input_path, read_pending_input, read_view
    from serving.monitoring.models import FeedbackRecord
    from serving.monitoring.sealing import RECORD_FEEDBACK
    from training.reference_profile import live_feature_row, profile_from_rows

    labels = ["no_finding", "opacity"]
    rng = np.random.default_rng(0)
    rows = [
        live_feature_row(rng.random((8, 8)), {"manufacturer": "GE"}, [0.7, 0.3], labels) for _ in range(20)
    ]
    recorder = LiveRecorder(
        "chest", "1", profile_from_rows(rows, rng.normal(size=(20, 6)), labels, embedding_dims=3)
    )
    for request_id in ("req-a", "req-b"):
        recorder.record(
            request_id, rng.random((8, 8)), {"manufacturer": "GE"}, [0.2, 0.8], rng.normal(size=6),
            input_bytes=b"sealed input " + request_id.encode(), view={"labels": labels, "summary": "opacity"},
        )  # fmt: skip
    cast = create_cast()
    submit_feedback(
        cast["doc"],
        FeedbackIn.model_validate({"request_id": "req-b", "agree": True, "comment": "call Dr Who"}),
    )
    reason = load_project_key().seal(b"patient request", b"er-1", record=RECORD_ERASURE)
    import base64

    with open_catalog().session() as session:
        session.add(
            ErasureRecord(
                id="er-1", requested_by="broker", approved_by="admin", reason_sha256="0" * 64,
                summary={"reason_sealed": base64.b64encode(reason).decode()},
            )
        )  # fmt: skip
    old_store = load_store_key(SERVING_STORE)
    old_broker = load_broker()
    input_before = pending_input_path("req-a").read_bytes()

    done = _run("keys", "rotate", token=cast.tokens["admin"])
    assert done.returncode == 0, done.stdout + done.stderr
    get_settings.cache_clear()

    new_store, new_broker = load_store_key(SERVING_STORE), load_broker()
    assert new_store.key_id != old_store.key_id and new_broker.key_id != old_broker.key_id
    after = pending_input_path("req-a").read_bytes()
    assert after != input_before
    with pytest.raises(KeyMissing):
        old_store.unseal(after, b"req-a", record="monitoring-input")
    assert read_pending_input("req-a") == b"sealed input req-a"
    assert read_view("req-a") == {"labels": labels, "summary": "opacity"}
    with open_catalog().session() as session:
        comment = session.query(FeedbackRecord).one().comment_sealed
        erasure = session.get(ErasureRecord, "er-1")
        assert erasure is not None
        reason_after = base64.b64decode(erasure.summary["reason_sealed"])
    assert comment is not None
    assert new_store.unseal(comment, b"req-b", record=RECORD_FEEDBACK) == b"call Dr Who"
    with pytest.raises(KeyMissing):
        old_store.unseal(comment, b"req-b", record=RECORD_FEEDBACK)
    assert new_broker.unseal(reason_after, b"er-1", record=RECORD_ERASURE) == b"patient request"
    with pytest.raises(KeyMissing):
        Broker.from_private(old_broker.private).unseal(reason_after, b"er-1", record=RECORD_ERASURE)
    assert AuditLog().verify().ok  # entries signed by the retired audit key still verify
    actions = [e.target.split(":")[0] for e in AuditLog().entries(action="keys.rotate")]
    assert sorted(actions) == ["audit-key", "broker-key", "serving-store-key", "ui-session-key"]
