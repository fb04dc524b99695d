"""Start-up recovery: objects without catalog records (a run killed between store and commit)
are removed, recorded objects are kept, records without objects (power loss) are removed and a
resend stores them again; windows too young to judge stay pending."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from governance.catalog import Instance, open_catalog
from governance.settings import get_settings
from tests.dicom_factory import PATIENT_ID, PATIENT_NAME, encode, make_ct


def _plant_object(root: Path, data: bytes) -> Path:
    key = hashlib.sha256(data).hexdigest()
    path = root / key[:2] / key[2:4] / f"{key}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_interrupted_run_is_reconciled_at_next_start(
    radgate_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from imaging.gateway.recovery import RunJournal
    from imaging.ingest import Ingestor, IngestStatus

    settings = get_settings()
    store = Path(settings.resolved_object_store)
    journal = RunJournal.load()
    assert journal.begin() is False  # first run: nothing to recover
    ingestor = Ingestor()
    inputs = [encode(make_ct(InstanceNumber=n)) for n in range(3)]
    outcomes = [ingestor.ingest_bytes(data, "test") for data in inputs]
    assert all(o.status is IngestStatus.DEIDENTIFIED for o in outcomes)
    kept = [store.joinpath(*_parts(o.store_key)) for o in outcomes]
    # What a SIGKILL between the store write and the commit leaves: complete objects, and
    # sealed quarantine entries, that no catalog record names.
    orphans = [_plant_object(store, f"orphan {n}".encode()) for n in range(2)]
    stray = settings.quarantine_dir / ("ef" * 32 + ".sealed")
    stray.write_bytes(b"sealed bytes")
    # And a record whose object went missing (lost storage).
    kept[2].unlink()
    # The process is killed: no journal.end(). The next start:
    restarted = RunJournal.load()
    assert restarted.begin() is True
    with caplog.at_level(logging.WARNING, logger="imaging.gateway.recovery"):
        found = restarted.reconcile(max_age=0)
    assert found.orphan_objects == 2 and found.orphan_quarantine == 1 and found.missing_objects == 1
    assert found.checked_objects == 4 and found.pending_windows == 0
    assert not any(p.exists() for p in [*orphans, stray])
    assert kept[0].exists() and kept[1].exists()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "removed 2 store objects and 1 quarantine entries" in message
    assert "1 catalog records whose object never became durable" in message
    for secret in (PATIENT_ID, str(PATIENT_NAME), *(o.sop_instance_uid or "-" for o in outcomes)):
        assert secret not in message
    with open_catalog().session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 2
    # A resend stores the missing one again; nothing is duplicated.
    assert ingestor.ingest_bytes(inputs[2], "test").status is IngestStatus.DEIDENTIFIED
    assert kept[2].exists()
    with open_catalog().session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 3
    # The window is done: a clean stop and start has nothing left to check.
    restarted.end()
    again = RunJournal.load()
    assert again.begin() is False and again.reconcile(max_age=0).checked_objects == 0


def test_objects_too_young_to_judge_stay_pending(radgate_home: Path) -> None:
    from imaging.gateway.recovery import RunJournal

    store = Path(get_settings().resolved_object_store)
    journal = RunJournal.load()
    journal.begin(now=time.time() - 30)
    orphan = _plant_object(store, b"young orphan")
    old = _plant_object(store, b"old orphan")
    stamp = time.time() - 20
    os.utime(old, (stamp, stamp))
    restarted = RunJournal.load()
    assert restarted.begin() is True
    # Another writer (radgate ingest) may still be about to record objects younger than 10 s.
    first = restarted.reconcile(max_age=10)
    assert first.orphan_objects == 1 and first.pending_windows == 1
    assert orphan.exists() and not old.exists()
    later = RunJournal.load()  # pending windows survive a restart
    assert later.pending and later.reconcile(max_age=0).orphan_objects == 1
    assert not orphan.exists() and later.pending == []


def _parts(key: str | None) -> tuple[str, str, str]:
    assert key is not None
    return key[:2], key[2:4], f"{key}.dcm"


def test_a_run_of_another_live_gateway_is_not_taken_for_a_crash(radgate_home: Path) -> None:
    import subprocess

    from imaging.gateway.recovery import RunJournal

    other = subprocess.Popen(["sleep", "60"])
    try:
        RunJournal.load(pid=other.pid).begin()  # another gateway on this home, still running
        mine = RunJournal.load()
        assert mine.begin() is False and mine.pending == []
        mine.end()
    finally:
        other.kill()
        other.wait()
    after = RunJournal.load()  # the other one is gone without a clean stop
    assert after.begin() is True and len(after.pending) == 1
