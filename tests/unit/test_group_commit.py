"""Group commit of network intake: batching, success only after the own batch, failure isolation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from governance.catalog import Instance, LineageEvent, open_catalog
from governance.settings import get_settings
from imaging.ingest.commit import GroupCommit
from tests.dicom_factory import encode, make_ct


class Refused(RuntimeError):
    pass


def _wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def test_items_queued_during_a_commit_share_the_next_batch() -> None:
    committed: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def commit(batch: list[int]) -> None:
        if not committed and not first_started.is_set():
            first_started.set()
            release_first.wait(30)
        committed.append(list(batch))

    group: GroupCommit[int] = GroupCommit(commit)
    seen_at_return: dict[int, bool] = {}

    def submit(item: int) -> None:
        group.submit(item)
        seen_at_return[item] = any(item in batch for batch in committed)

    with ThreadPoolExecutor(9) as pool:
        leader = pool.submit(submit, 0)
        assert first_started.wait(30)
        followers = [pool.submit(submit, n) for n in range(1, 9)]
        _wait_for(lambda: len(group._queue) == 8)  # all queued behind the running commit
        assert not any(f.done() for f in followers)  # nobody hears success before its commit
        release_first.set()
        for future in [leader, *followers]:
            future.result(30)
    assert committed == [[0], [1, 2, 3, 4, 5, 6, 7, 8]] or sorted(committed[1]) == list(range(1, 9))
    assert seen_at_return == {n: True for n in range(9)}
    assert group.stats.batches == 2 and group.stats.items == 9 and group.stats.largest == 8


def test_a_failing_item_fails_alone_and_the_rest_of_its_batch_commits() -> None:
    committed: list[int] = []
    gate = threading.Event()

    def commit(batch: list[int]) -> None:
        gate.wait(30)
        if 13 in batch:
            raise Refused("item 13 cannot be recorded")
        committed.extend(batch)

    group: GroupCommit[int] = GroupCommit(commit)
    with ThreadPoolExecutor(8) as pool:
        futures = {n: pool.submit(group.submit, n) for n in (10, 11, 12, 13, 14, 15)}
        _wait_for(lambda: len(group._queue) >= 5)
        gate.set()
        for item, future in futures.items():
            if item == 13:
                with pytest.raises(Refused):
                    future.result(30)
            else:
                assert future.result(30) is None
    assert sorted(committed) == [10, 11, 12, 14, 15]
    assert group.stats.retried_batches == 1


def test_concurrent_ingest_records_each_instance_once_and_fails_only_the_refused_one(
    radgate_home: Path,
) -> None:
    from imaging.ingest import Ingestor, IngestStatus

    ingestor = Ingestor()
    # A real database refusal for one instance, whatever batch it lands in.
    with ingestor.catalog.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON lineage WHEN NEW.source = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    inputs = [encode(make_ct(PatientID=f"GC{n % 3}", InstanceNumber=n + 1)) for n in range(24)]
    sources = ["poison" if n == 7 else f"test:{n}" for n in range(24)]

    def ingest(n: int) -> IngestStatus | str:
        try:
            return ingestor.ingest_bytes(inputs[n], sources[n]).status
        except Exception as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ingest, range(24)))
    assert outcomes[7] == "IntegrityError"
    assert [o for n, o in enumerate(outcomes) if n != 7] == [IngestStatus.DEIDENTIFIED] * 23
    with open_catalog().session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 23
        assert session.scalar(select(func.count()).select_from(LineageEvent)) == 23
        recorded = set(session.scalars(select(Instance.sha256)))
    # The refused instance's object is not left in the store (its sender heard a failure).
    assert {p.stem for p in Path(get_settings().resolved_object_store).rglob("*.dcm")} == recorded
    # Resending everything duplicates nothing (the refused one is refused again).
    again = [ingest(n) for n in range(24)]
    assert again.count(IngestStatus.DUPLICATE) == 23
    with open_catalog().session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 23
