"""Twins: two copies of the same instance arriving at once (two associations, two gateway
workers) share one content-addressed object. A twin that fails must never remove the object
that the other twin's committed record points to."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from governance.catalog import Instance
from tests.dicom_factory import encode, make_ct


def _held_commit(ingestor: object, entered: threading.Event, release: threading.Event) -> None:
    """Make ``ingestor``'s group commit wait for ``release`` before it commits (a twin whose
    record is about to be committed, e.g. in another worker process)."""
    commits = ingestor.commits  # type: ignore[attr-defined]
    real: Callable[[list[object]], object] = commits.commit

    def held(batch: list[object]) -> object:
        entered.set()
        assert release.wait(30)
        return real(batch)

    commits.commit = held


def _start(target: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["outcome"] = target()
        except BaseException as exc:  # reported to the test below
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _assert_stored(ingestor: object, out: dict[str, object]) -> None:
    """The committing twin heard success and its object is in the store, intact and recorded."""
    from imaging.ingest import IngestStatus

    assert "error" not in out
    outcome = out["outcome"]
    assert outcome.status is IngestStatus.DEIDENTIFIED  # type: ignore[attr-defined]
    store_key = outcome.store_key  # type: ignore[attr-defined]
    path: Path = ingestor.store.path(store_key)  # type: ignore[attr-defined]
    assert path.is_file(), "a committed record points to an object that a failed twin removed"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == store_key
    with ingestor.catalog.session() as session:  # type: ignore[attr-defined]
        assert session.scalar(select(Instance.store_key).where(Instance.sha256 == store_key)) == store_key


def test_a_twin_whose_commit_fails_keeps_the_object_of_the_committing_twin(radgate_home: Path) -> None:
    from imaging.ingest import Ingestor

    data = encode(make_ct(InstanceNumber=7))
    first, second = Ingestor(), Ingestor()  # e.g. two gateway worker processes
    entered, release = threading.Event(), threading.Event()
    _held_commit(first, entered, release)
    thread, out = _start(lambda: first.ingest_bytes(data, "c-store:A"))
    try:
        assert entered.wait(30)  # the first twin's object is written, its record not yet

        def failing(batch: list[object]) -> object:
            raise OperationalError("INSERT", {}, Exception("database is locked"))

        second.commits.commit = failing  # type: ignore[assignment]
        with pytest.raises(OperationalError):
            second.ingest_bytes(data, "c-store:B")  # the failed twin cleans up
    finally:
        release.set()
        thread.join(30)
    _assert_stored(first, out)


def test_a_twin_whose_flush_fails_keeps_the_object_that_a_record_names(radgate_home: Path) -> None:
    from imaging.ingest import Ingestor

    data = encode(make_ct(InstanceNumber=8))
    first, second = Ingestor(), Ingestor()
    entered, release = threading.Event(), threading.Event()
    _held_commit(first, entered, release)
    thread, out = _start(lambda: first.ingest_bytes(data, "c-store:A"))
    try:
        assert entered.wait(30)
        # The second twin passes the duplicate check before the first commits, then commits
        # after it; its own flush fails (EIO), so its sender must hear a failure.
        real_commit = second.commits.commit

        def after_first(batch: list[Any]) -> object:
            release.set()
            thread.join(30)
            return real_commit(batch)

        second.commits.commit = after_first

        def failed_flush(key: str, new_folder: bool) -> None:
            raise OSError(5, "Input/output error")

        second._flush = failed_flush  # type: ignore[method-assign]
        with pytest.raises(OSError):
            second.ingest_bytes(data, "c-store:B")
    finally:
        release.set()
        thread.join(30)
    _assert_stored(first, out)
