"""Accept balancing between pre-forked SCP workers (shared counters, one slot per worker)."""

from __future__ import annotations

import multiprocessing
import time

from imaging.gateway.scp import AcceptBalance


def test_the_busier_worker_leaves_the_connection_to_the_least_busy_one() -> None:
    counts = multiprocessing.RawArray("i", 2)
    first, second = AcceptBalance(counts, 0, patience=0.2), AcceptBalance(counts, 1, patience=0.2)
    assert not first.defer() and not second.defer()  # equal: whoever is woken first accepts
    first.opened()
    assert first.defer() and not second.defer()
    second.opened()
    assert not first.defer()
    first.opened()
    first.opened()
    assert list(counts) == [3, 1]
    assert first.defer()
    time.sleep(0.25)  # the other worker did not take it (busy, stuck): accept anyway
    assert not first.defer()
    first.closed()
    first.closed()
    assert list(counts) == [1, 1] and not first.defer()


def test_a_single_worker_never_defers() -> None:
    counts = multiprocessing.RawArray("i", 1)
    only = AcceptBalance(counts, 0)
    only.opened()
    only.opened()
    assert not only.defer()
