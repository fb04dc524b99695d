"""The gateway's receive spool (``imaging.gateway.spool``): sealed, bounded, exclusive claims,
removed only after the ingest returned, unreadable entries set aside (never deleted)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from governance.keyring import StoreKey
from imaging.gateway.spool import Spool, SpoolDrainer, SpoolError

KEY = StoreKey("gateway-spool", b"\x11" * 32)
PHI = b"Doe^Jane\x00PAT-0001"


def _data(n: int) -> tuple[bytes, str]:
    data = PHI + n.to_bytes(4, "big") * 64
    return data, hashlib.sha256(data).hexdigest()


class RecordingSink:
    def __init__(self, fail: int = 0) -> None:
        self.seen: list[tuple[bytes, str, str | None]] = []
        self.fail = fail

    def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> Any:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("catalog unavailable")
        self.seen.append((data, source, input_sha256))

        class Outcome:
            status = "deidentified"

        return Outcome()


def test_entries_are_sealed_durable_and_drained_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    sent = [_data(n) for n in range(5)]
    for data, digest in sent:
        assert spool.put(data, digest, "c-store:STORESCU@127.0.0.1")
    entries = spool.pending()
    assert len(entries) == 5 and spool.depth(fresh=True)[0] == 5
    for path in entries:
        raw = path.read_bytes()
        assert b"Doe^Jane" not in raw and b"PAT-0001" not in raw and b"STORESCU" not in raw
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    sink = RecordingSink()
    assert SpoolDrainer(spool, sink).drain_once() == 5
    assert [(d, s) for d, _, s in sink.seen] == [(d, s) for d, s in sent]  # oldest first, hash kept
    assert {source for _, source, _ in sink.seen} == {"c-store:STORESCU@127.0.0.1"}
    assert spool.pending() == [] and spool.depth(fresh=True) == (0, 0)


def test_a_full_spool_refuses_instead_of_growing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=3)
    assert all(spool.put(*_data(n), "s") for n in range(3))
    assert not spool.put(*_data(3), "s")
    small = Spool(tmp_path / "small", KEY, max_bytes=400, max_files=100)
    assert small.put(*_data(0), "s")
    assert not small.put(*_data(1), "s")  # the bytes limit too
    assert len(small.pending()) == 1


def test_an_entry_stays_until_the_ingest_succeeds(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    spool.put(*_data(0), "s")
    sink = RecordingSink(fail=1)
    drainer = SpoolDrainer(spool, sink)
    with pytest.raises(ConnectionError):
        drainer.drain_once()
    assert len(spool.pending()) == 1  # kept for the retry
    assert drainer.drain_once() == 1
    assert spool.pending() == [] and len(sink.seen) == 1


def test_the_drainer_retries_an_outage_and_then_drains(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    for n in range(3):
        spool.put(*_data(n), "s")
    sink = RecordingSink(fail=2)
    stop = threading.Event()
    drainer = SpoolDrainer(spool, sink, poll=0.01, max_backoff=0.05)
    thread = threading.Thread(target=drainer.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if not spool.pending():
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert spool.pending() == [] and len(sink.seen) == 3 and drainer.drained == 3


def test_a_claimed_entry_is_skipped_by_another_drainer(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    spool.put(*_data(0), "s")
    (path,) = spool.pending()
    with spool.claim(path) as held:
        assert held is not None
        # Another process (a second drainer) sees the lock and leaves the entry alone.
        pid = os.fork()
        if pid == 0:
            with spool.claim(path) as other:
                os._exit(0 if other is None else 1)
        assert os.waitpid(pid, 0)[1] == 0
    assert spool.pending() == []  # removed by its holder once the block finished


def test_a_tampered_entry_is_set_aside_and_the_rest_drains(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    for n in range(3):
        spool.put(*_data(n), "s")
    first = spool.pending()[0]
    raw = bytearray(first.read_bytes())
    raw[-1] ^= 1
    first.write_bytes(bytes(raw))
    sink = RecordingSink()
    drainer = SpoolDrainer(spool, sink)
    with pytest.raises(SpoolError) as raised:
        drainer.drain_once()
    assert "Doe" not in str(raised.value)
    assert (spool.directory / "unreadable" / first.name).exists()  # kept for the operator
    assert drainer.drain_once() == 2 and spool.pending() == []


def test_an_entry_relabelled_with_another_digest_does_not_unseal(tmp_path: Path) -> None:
    """The digest in the header is bound into the seal: entries cannot be relabelled."""
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    data, digest = _data(0)
    spool.put(data, digest, "s")
    (path,) = spool.pending()
    raw = path.read_bytes()
    path.write_bytes(raw.replace(bytes.fromhex(digest), bytes.fromhex(_data(1)[1]), 1))
    with pytest.raises(SpoolError):
        SpoolDrainer(spool, RecordingSink()).drain_once()
    assert spool.pending() == []


def test_empty_slots_and_cut_short_fills_are_removed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    spool.put(*_data(0), "s")
    spool.put(*_data(1), "s")
    whole, cut = spool.pending()
    cut.write_bytes(cut.read_bytes()[:-10])  # a crash during the fill: never acknowledged
    slots = len(list(spool.directory.iterdir()))
    assert slots > 2  # the rest of the batch: empty, durable slots made ahead
    assert spool.remove_incomplete() == slots - 1
    assert spool.pending() == [whole] and list(spool.directory.iterdir()) == [whole]


def test_a_slot_being_filled_is_not_drained(tmp_path: Path) -> None:
    """The writer holds the slot's lock from before its first byte to after its fsync."""
    import fcntl

    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    spool.put(*_data(0), "s")
    (path,) = spool.pending()
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if SpoolDrainer(spool, RecordingSink()).drain_once() == 0 else 1)
    assert os.waitpid(pid, 0)[1] == 0
    os.close(fd)
    assert SpoolDrainer(spool, RecordingSink()).drain_once() == 1


def test_a_stop_request_ends_the_drain_between_entries(tmp_path: Path) -> None:
    """SIGTERM sets the drainer's stop event: it finishes the entry in hand and leaves the rest
    for the next start instead of draining a deep backlog past the service's drain timeout."""
    spool = Spool(tmp_path / "spool", KEY, max_bytes=10**6, max_files=100)
    for n in range(5):
        spool.put(*_data(n), "s")
    stop = threading.Event()

    class StopsAfterTwo(RecordingSink):
        def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> Any:
            outcome = super().ingest_bytes(data, source, input_sha256=input_sha256)
            if len(self.seen) == 2:
                stop.set()
            return outcome

    assert SpoolDrainer(spool, StopsAfterTwo()).drain_once(stop) == 2
    assert len(spool.pending()) == 3
