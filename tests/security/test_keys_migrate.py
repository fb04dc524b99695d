"""``radgate keys migrate``: a RADGATE_HOME written by the release with one project key (audit
entries MACed with it, everything sealed under it, a rotated seal.key) becomes the separated
layout: the chain re-signed after its MACs verified, originals sealed to the broker, serving's
records under serving's key; nothing stays readable with the project key alone."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from governance.audit import AuditLog, ChainBroken, ChainGuard, canonical_json
from governance.catalog import Pseudonym, open_catalog
from governance.keyring import SERVING_STORE, load_broker, load_store_key
from governance.keys import KeyError_, ProjectKey, _derive, load_project_key, seal_key_path
from governance.settings import get_settings


def _legacy_seal(material: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_derive(material, "seal")).encrypt(nonce, plaintext, aad)


def _legacy_audit_rows(key: ProjectKey, count: int) -> None:
    """Entries as the earlier release wrote them: HMAC (project key, ``audit-chain``) of each hash."""
    import sqlite3

    open_catalog()
    db = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    prev = "0" * 64
    for seq in range(1, count + 1):
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        body = {"seq": seq, "ts": ts, "actor": "old", "role": "admin", "action": "model.approve",
                "target": f"model:m/{seq}", "details": {"i": seq}, "prev_hash": prev}  # fmt: skip
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        mac = hmac.new(key.derive("audit-chain"), digest.encode(), hashlib.sha256).hexdigest()
        db.execute(
            "INSERT INTO audit_log (seq, ts, actor, role, action, target, details, prev_hash, hash,"
            " key_id, mac) VALUES (?, ?, 'old', 'admin', 'model.approve', ?, ?, ?, ?, ?, ?)",
            (seq, ts, f"model:m/{seq}", f'{{"i": {seq}}}', prev, digest, key.key_id, mac),
        )
        prev = digest


def test_keys_migrate_converts_a_home_of_the_earlier_release() -> None:
    from governance.testing import create_cast
    from serving.monitoring import FeedbackIn, LiveRecorder, submit_feedback
    from serving.monitoring.live import pending_input_path, read_pending_input
    from serving.monitoring.models import FeedbackRecord
    from training.reference_profile import live_feature_row, profile_from_rows

    home = get_settings().home
    legacy = load_project_key()
    seal_secret = os.urandom(32)  # the earlier release's rotated encryption key
    seal_key_path(get_settings()).write_text(seal_secret.hex() + "\n")
    _legacy_audit_rows(legacy, 4)
    cast = create_cast()  # later entries, signed by the new audit key

    with open_catalog().session() as session:
        old_original = _legacy_seal(seal_secret, b"MRN-0042", b"ab" * 16)
        session.add(
            Pseudonym(
                kind="patient_id",
                pseudonym="PAT-1",
                lookup="ab" * 16,
                sealed_original=old_original,
                key_id=legacy.key_id,
            )
        )
    quarantined = home / "quarantine" / ("cd" * 32 + ".sealed")
    quarantined.parent.mkdir(parents=True, exist_ok=True)
    quarantined.write_bytes(_legacy_seal(seal_secret, b"DICM with PHI", ("cd" * 32).encode()))
    labels = ["no_finding", "opacity"]
    rng = np.random.default_rng(0)
    rows = [
        live_feature_row(rng.random((8, 8)), {"manufacturer": "GE"}, [0.7, 0.3], labels) for _ in range(20)
    ]
    recorder = LiveRecorder(
        "chest", "1", profile_from_rows(rows, rng.normal(size=(20, 6)), labels, embedding_dims=3)
    )
    recorder.record(
        "req-1", rng.random((8, 8)), {"manufacturer": "GE"}, [0.2, 0.8], rng.normal(size=6), input_bytes=b"x"
    )
    submit_feedback(
        cast["doc"],
        FeedbackIn.model_validate({"request_id": "req-1", "agree": True, "comment": "see Dr Who"}),
    )
    # put serving's records back into the earlier release's format
    pending_input_path("req-1").write_bytes(_legacy_seal(seal_secret, b"held input", b"req-1"))
    with open_catalog().session() as session:
        session.query(FeedbackRecord).one().comment_sealed = _legacy_seal(
            seal_secret, b"see Dr Who", b"req-1"
        )

    assert AuditLog().verify().problem == "forged"  # MACed entries are not signed
    with pytest.raises(ChainBroken):
        ChainGuard(AuditLog()).check()

    done = subprocess.run(
        [sys.executable, "-m", "radgate", "keys", "migrate", "--token", cast.tokens["admin"]],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-signed 4 entries" in done.stdout
    get_settings.cache_clear()

    assert AuditLog().verify().ok
    assert ChainGuard(AuditLog()).check().seq >= 4
    assert not seal_key_path(get_settings()).exists()
    broker = load_broker()
    with open_catalog().session() as session:
        sealed = session.query(Pseudonym).one().sealed_original
        comment = session.query(FeedbackRecord).one().comment_sealed
    assert broker.unseal(sealed, b"ab" * 16, record="reid-map") == b"MRN-0042"
    assert (
        broker.unseal(quarantined.read_bytes(), ("cd" * 32).encode(), record="quarantine-input")
        == b"DICM with PHI"
    )
    assert read_pending_input("req-1") == b"held input"
    assert comment is not None
    assert load_store_key(SERVING_STORE).unseal(comment, b"req-1", record="feedback-comment") == b"see Dr Who"
    with pytest.raises(KeyError_):  # the project key alone opens none of it any more
        ProjectKey(legacy.secret, seal_secret).legacy_unseal(sealed, b"ab" * 16)
