"""The hash-chained audit log: verification catches edits, deletions, insertions, reordering,
forged rebuilds and truncation; details never take PHI."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.audit import AuditLog, AuditPHIError, canonical_json, record
from governance.settings import get_settings
from tests.event_loops import run_on_own_loop


def _db() -> sqlite3.Connection:
    return sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)


def _fill(n: int = 6) -> AuditLog:
    log = AuditLog()
    for i in range(n):
        log.append(
            f"user{i % 2}", "model.approve", f"model:cxr/{i}", {"i": i, "ok": True}, role="ml-engineer"
        )
    return log


def test_append_chains_entries_and_verify_passes() -> None:
    log = _fill()
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].prev_hash == "0" * 64
    for prev, entry in itertools.pairwise(entries):
        assert entry.prev_hash == prev.hash
    body = {k: getattr(entries[2], k) for k in ("seq", "ts", "actor", "role", "action", "target", "details")}
    expected = hashlib.sha256(canonical_json({**body, "prev_hash": entries[2].prev_hash})).hexdigest()
    assert entries[2].hash == expected
    report = log.verify()
    assert report.ok and report.entries == 6 and report.head_hash == entries[-1].hash


def test_edit_is_detected() -> None:
    log = _fill()
    _db().execute("""UPDATE audit_log SET details='{"i": 3, "ok": false}' WHERE seq=4""")
    report = log.verify()
    assert not report.ok and report.problem == "altered" and report.first_bad_seq == 4


def test_deleting_a_middle_entry_is_detected() -> None:
    log = _fill()
    _db().execute("DELETE FROM audit_log WHERE seq=3")
    report = log.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "deleted", 3)


def test_truncating_the_newest_entries_is_detected_by_the_anchor(tmp_path: Path) -> None:
    log = _fill()
    external = tmp_path / "worm" / "head.json"
    log.anchor_to_file(external)
    (get_settings().home / "audit" / "head.json").unlink()  # attacker removes the local anchor too
    _db().execute("DELETE FROM audit_log WHERE seq>=5")
    assert log.verify().problem == "anchor-missing"  # the signed head anchor must exist
    report = log.verify(anchors=[external])
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "truncated", 5)


def test_automatic_head_file_detects_truncation() -> None:
    log = _fill()
    _db().execute("DELETE FROM audit_log WHERE seq=6")
    assert log.verify().problem == "truncated"


def test_swapping_two_entries_is_detected() -> None:
    log = _fill()
    db = _db()
    cols = "ts, actor, role, action, target, details, prev_hash, hash, key_id, mac"
    r3 = db.execute(f"SELECT {cols} FROM audit_log WHERE seq=3").fetchone()
    r4 = db.execute(f"SELECT {cols} FROM audit_log WHERE seq=4").fetchone()
    sets = ", ".join(f"{c.strip()}=?" for c in cols.split(","))
    db.execute("DELETE FROM audit_log WHERE seq IN (3, 4)")
    db.execute(f"INSERT INTO audit_log (seq, {cols}) VALUES (3, {', '.join('?' * 10)})", r4)
    db.execute(f"INSERT INTO audit_log (seq, {cols}) VALUES (4, {', '.join('?' * 10)})", r3)
    assert sets  # columns used above
    report = log.verify()
    assert not report.ok and report.problem == "reordered" and report.first_bad_seq == 3


def test_inserting_a_rebuilt_entry_is_detected() -> None:
    """An attacker inserts an entry with a correct SHA-256 chain link, renumbering the rest."""
    log = _fill()
    db = _db()
    prev = db.execute("SELECT hash FROM audit_log WHERE seq=3").fetchone()[0]
    db.execute("UPDATE audit_log SET seq = seq + 100 WHERE seq > 3")
    db.execute("UPDATE audit_log SET seq = seq - 99 WHERE seq > 100")
    ts = "2026-01-01T00:00:00.000000+00:00"
    details = {"i": 99}
    body = {
        "seq": 4,
        "ts": ts,
        "actor": "mallory",
        "role": "clinical-reviewer",
        "action": "model.approve",
        "target": "model:cxr/9",
        "details": details,
        "prev_hash": prev,
    }
    digest = hashlib.sha256(canonical_json(body)).hexdigest()
    db.execute(
        "INSERT INTO audit_log VALUES (4, ?, 'mallory', 'clinical-reviewer', 'model.approve',"
        " 'model:cxr/9', ?, ?, ?, 'k', 'm')",
        (ts, json.dumps(details), prev, digest),
    )
    report = log.verify()
    assert not report.ok
    # The inserted row itself has a valid hash and link but no valid MAC: the chain is named
    # broken at or right after it.
    assert report.problem in {"inserted", "altered", "forged"} and report.first_bad_seq in {4, 5}


def test_chain_rebuilt_without_the_key_is_detected_as_forged() -> None:
    """Rewriting an entry and recomputing every later SHA-256 leaves the MACs wrong."""
    log = _fill(3)
    db = _db()
    rows = db.execute(
        "SELECT seq, ts, actor, role, action, target, details, prev_hash FROM audit_log ORDER BY seq"
    )
    prev = "0" * 64
    for seq, ts, actor, role, action, target, details, _ in list(rows):
        if seq == 2:
            actor = "mallory"
        body = {
            "seq": seq,
            "ts": ts,
            "actor": actor,
            "role": role,
            "action": action,
            "target": target,
            "details": json.loads(details),
            "prev_hash": prev,
        }
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        db.execute(
            "UPDATE audit_log SET actor=?, prev_hash=?, hash=? WHERE seq=?", (actor, prev, digest, seq)
        )
        prev = digest
    (get_settings().home / "audit" / "head.json").unlink()
    report = log.verify()
    assert (report.ok, report.problem, report.first_bad_seq) == (False, "forged", 2)


@pytest.mark.parametrize(
    "details",
    [
        {"PatientName": "DOE^JOHN"},
        {"patient_id": "123"},
        {"nested": {"AccessionNumber": "A1"}},
        {"items": [{"birth_date": "19700101"}]},
        {"x": float("nan")},
        {"x": object()},
        {"x": "y" * 5000},
    ],
)
def test_phi_and_non_json_details_are_refused(details: dict[str, object]) -> None:
    with pytest.raises(AuditPHIError):
        record("someone", "ingest", "instance:abc", details)
    assert AuditLog().entries() == []


def test_concurrent_appends_keep_one_chain() -> None:
    log = AuditLog()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                log.append(f"w{n}", "inference", f"model:cxr/{i}", {"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = log.verify()
    assert report.ok and report.entries == 40


def test_group_commit_writes_every_entry_in_order_and_a_bad_one_fails_alone() -> None:
    from governance.audit import GroupCommit, PendingEntry

    group = GroupCommit(max_group=8)
    futures = [group.submit("ingress", "serve.predict", f"model:cxr/{i}", {"i": i}) for i in range(20)]
    bad = group.submit("ingress", "serve.predict", "model:cxr/x", {"PatientName": "DOE^JOHN"})
    futures.append(group.submit("ingress", "serve.predict", "model:cxr/last", {"i": 20}))
    stored = [f.result(timeout=30) for f in futures]
    with pytest.raises(AuditPHIError):
        bad.result(timeout=30)
    log = AuditLog()
    assert [e.details["i"] for e in log.entries()] == list(range(21))
    assert [e.seq for e in stored] == list(range(1, 22))
    assert log.verify().ok
    # One transaction for several entries: all chained, nothing stored when one is refused.
    appended = log.append_many([PendingEntry("a", "x", "t:1"), PendingEntry("a", "x", "t:2", role="r")])
    assert appended[1].prev_hash == appended[0].hash and log.head() == appended[1]
    with pytest.raises(AuditPHIError):
        log.append_many([PendingEntry("a", "x", "t:3"), PendingEntry("a", "x", "t:4", {"patient_id": "1"})])
    assert len(log.entries()) == 23 and log.verify().ok


def test_filters_and_export() -> None:
    log = _fill()
    log.append("auditor", "audit.verify", "audit:log", {})
    assert [e.seq for e in log.entries(actor="user1")] == [2, 4, 6]
    assert len(log.entries(action="audit.")) == 1
    assert [e.target for e in log.entries(target_prefix="model:cxr/1")] == ["model:cxr/1"]
    assert len(log.entries(limit=2, newest_first=True)) == 2
    assert log.entries(since="2999-01-01") == []
    buffer = io.StringIO()
    assert log.export(buffer) == 7
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["seq"] == 1 and lines[-1]["action"] == "audit.verify"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    details=st.dictionaries(
        st.text(alphabet="abcxyz_", min_size=1, max_size=8),
        st.one_of(
            st.integers(-(2**40), 2**40),
            st.text(max_size=30),
            st.booleans(),
            st.none(),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=5,
    )
)
def test_any_json_details_roundtrip_and_verify(details: dict[str, object]) -> None:
    log = AuditLog()
    entry = log.append("prop", "test", "t:1", details)
    stored = log.entries(newest_first=True, limit=1)[0]
    assert stored.hash == entry.hash and log.authentic(stored)
    assert log.verify().ok


_COLUMNS = ["ts", "actor", "role", "action", "target", "details", "prev_hash", "hash", "mac", "key_id"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 8), column=st.sampled_from(_COLUMNS), salt=st.text(min_size=1, max_size=5))
def test_any_single_field_edit_is_detected(seq: int, column: str, salt: str) -> None:
    log = AuditLog()
    if log.head() is None:
        _fill(8)
    db = _db()
    (original,) = db.execute(f"SELECT {column} FROM audit_log WHERE seq=?", (seq,)).fetchone()
    changed = '{"edited": "' + salt + '"}' if column == "details" else original + salt
    db.execute(f"UPDATE audit_log SET {column}=? WHERE seq=?", (changed, seq))
    try:
        report = log.verify()
        assert not report.ok and report.first_bad_seq in {seq, seq - 1, seq + 1}
    finally:
        db.execute(f"UPDATE audit_log SET {column}=? WHERE seq=?", (original, seq))
    assert log.verify().ok


def test_appends_from_several_processes_keep_one_chain() -> None:
    import subprocess
    import sys

    code = (
        "from governance.audit import record\n"
        "import sys\n"
        "for i in range(15): record('p' + sys.argv[1], 'inference', 'model:cxr/1', {'i': i})\n"
    )
    record("parent", "start", "t:0", {})  # the catalog exists before the children start
    children = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(3)]
    assert [child.wait(timeout=300) for child in children] == [0, 0, 0]
    report = AuditLog().verify()
    assert report.ok and report.entries == 46


def test_appends_reuse_the_signing_key_until_a_key_file_changes() -> None:
    """An append no longer reads and parses the key files each time; a rotation (new key files)
    is still used from the next append on, and the chain verifies across it."""
    from governance.audit import log as audit_log
    from governance.audit.keys import rotate_audit_key

    log = _fill(2)
    settings = get_settings()
    first = audit_log._current_signer(settings)
    assert audit_log._current_signer(settings) is first  # unchanged files: no reload
    change = rotate_audit_key(log)
    log.append("user0", "model.approve", "model:cxr/9", {"i": 9}, role="ml-engineer")
    newest = log.entries()[-1]
    assert newest.key_id == change.new_key_id != first.key_id
    assert AuditLog().verify().ok


def test_group_append_stores_exactly_what_it_returns() -> None:
    """The Core insert stores the rows the entries describe (hash, signature, details)."""
    from governance.audit import PendingEntry

    log = AuditLog()
    appended = log.append_many(
        [PendingEntry("a", "x.y", "t:1", {"n": 1, "z": [1, "b"]}, "r"), PendingEntry("b", "x.z", "t:2")]
    )
    assert log.entries() == appended
    assert all(log.authentic(e) for e in appended)
    assert appended[1].prev_hash == appended[0].hash


def test_group_commit_record_writes_a_lone_entry_at_once_and_queues_behind_a_lock() -> None:
    """On an event loop, a lone entry is committed on the loop (no writer thread); while another
    writer holds the database it is handed to the writer thread instead, and ``record`` still
    returns only once it is committed."""
    import asyncio

    from governance.audit import GroupCommit

    group = GroupCommit()
    log = AuditLog()
    first = run_on_own_loop(group.record("ingress", "serve.predict", "model:cxr/1", {"i": 1}))
    assert group._writer is None and log.head() == first
    with pytest.raises(AuditPHIError):  # refused entries still raise, and nothing is written
        run_on_own_loop(group.record("ingress", "serve.predict", "model:cxr/x", {"PatientName": "DOE^J"}))
    assert log.head() == first

    # Another process writing: the database is locked (committed from the coroutine's thread).
    other = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")

    async def locked() -> tuple[bool, object]:
        task = asyncio.ensure_future(group.record("ingress", "serve.predict", "model:cxr/2", {"i": 2}))
        await asyncio.sleep(0.3)
        waiting = not task.done()
        other.execute("COMMIT")
        return waiting, await task

    waiting, second = run_on_own_loop(locked())
    other.close()
    assert waiting and group._writer is not None  # queued to the writer, not committed meanwhile
    assert log.head() == second and [e.details.get("i") for e in log.entries()] == [1, 2]
    assert log.verify().ok
