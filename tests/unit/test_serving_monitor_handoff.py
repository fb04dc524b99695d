"""Live monitoring's hand-off off the request path (serving.worker.MonitorHandoff): under load
nothing queued is lost, what queued meanwhile goes on together, and a full backlog is counted
(and exported), never dropped silently."""

from __future__ import annotations

import threading
import time
import types
from typing import Any

import pytest


def _predictor(name: str = "handoff-model") -> Any:
    return types.SimpleNamespace(loaded=types.SimpleNamespace(name=name))


def _case(k: int) -> tuple[str, bytes, dict[str, Any], None]:
    return (f"{k:032x}", b"dicom", {"probabilities": [0.5, 0.5]}, None)


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def _unrecorded_metric(model: str) -> float:
    from serving.metrics import REGISTRY

    return REGISTRY.get_sample_value("radgate_monitoring_unrecorded_total", {"model": model}) or 0.0


def test_nothing_queued_is_lost_under_load_and_backlogs_go_on_together() -> None:
    from serving.worker import MonitorHandoff

    seen: list[str] = []
    calls: list[int] = []

    def slow_sink(_predictor: Any, _recorder: Any, cases: list[Any]) -> None:
        time.sleep(0.002)  # a recorder process that reads slower than requests arrive
        calls.append(len(cases))
        seen.extend(case[0] for case in cases)

    handoff = MonitorHandoff(slow_sink, backlog=1024, frame=32)
    predictor, recorder = _predictor(), object()
    sent: list[str] = []
    errors: list[BaseException] = []

    def client(offset: int) -> None:  # concurrent request threads
        try:
            for k in range(offset, offset + 200):
                case = _case(k)
                assert handoff.submit(predictor, recorder, [case])
                sent.append(case[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    _wait(lambda: len(seen) == len(sent))
    assert sorted(seen) == sorted(sent), "every queued request was handed on, once"
    assert handoff.unrecorded == 0
    assert len(calls) < len(sent), "requests that queued meanwhile went on in shared calls"
    assert max(calls) <= 32


def test_requests_of_another_recorder_are_not_mixed() -> None:
    from serving.worker import MonitorHandoff

    entered, release = threading.Event(), threading.Event()
    groups: list[tuple[Any, list[str]]] = []

    def sink(_predictor: Any, recorder: Any, cases: list[Any]) -> None:
        entered.set()
        release.wait(10)
        groups.append((recorder, [case[0] for case in cases]))

    handoff = MonitorHandoff(sink)
    predictor, first, second = _predictor(), object(), object()
    handoff.submit(predictor, first, [_case(0)])
    assert entered.wait(10)  # the first is being handed on; the rest queue
    for k, recorder in enumerate((first, first, second, first), start=1):
        handoff.submit(predictor, recorder, [_case(k)])
    release.set()
    _wait(lambda: sum(len(ids) for _, ids in groups) == 5)
    assert [(r is first, ids) for r, ids in groups] == [
        (True, [_case(0)[0]]),
        (True, [_case(1)[0], _case(2)[0]]),
        (False, [_case(3)[0]]),
        (True, [_case(4)[0]]),
    ]


def test_a_full_backlog_is_counted_and_exported_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    from serving.worker import MonitorHandoff

    model = "handoff-full-model"
    entered, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def blocked_sink(_predictor: Any, _recorder: Any, cases: list[Any]) -> None:
        entered.set()
        release.wait(10)
        seen.extend(case[0] for case in cases)

    handoff = MonitorHandoff(blocked_sink, backlog=4)
    predictor, recorder = _predictor(model), object()
    before = _unrecorded_metric(model)
    assert handoff.submit(predictor, recorder, [_case(0)])
    assert entered.wait(10)  # taken by the hand-off thread, which now waits
    for k in range(1, 5):
        assert handoff.submit(predictor, recorder, [_case(k)])  # the backlog holds 4
    with caplog.at_level("WARNING", logger="serving.worker"):
        assert not handoff.submit(predictor, recorder, [_case(5), _case(6)])
        assert not handoff.submit(predictor, recorder, [_case(7)])
    assert handoff.unrecorded == 3, "images not recorded are counted"
    assert _unrecorded_metric(model) - before == 3, "and exported (radgate_monitoring_unrecorded_total)"
    assert "backlog full" in caplog.text
    release.set()
    _wait(lambda: len(seen) == 5)
    assert seen == [_case(k)[0] for k in range(5)], "everything that was queued is recorded, in order"


def test_a_failing_sink_does_not_stop_the_handoff(caplog: pytest.LogCaptureFixture) -> None:
    from serving.worker import MonitorHandoff

    seen: list[str] = []

    def sink(_predictor: Any, _recorder: Any, cases: list[Any]) -> None:
        if cases[0][0] == _case(0)[0]:
            raise RuntimeError("recorder down")
        seen.extend(case[0] for case in cases)

    handoff = MonitorHandoff(sink)
    with caplog.at_level("WARNING", logger="serving.worker"):
        handoff.submit(_predictor(), object(), [_case(0)])
        _wait(lambda: "live features not recorded" in caplog.text)
    handoff.submit(_predictor(), object(), [_case(1)])
    _wait(lambda: seen == [_case(1)[0]])


def test_drain_waits_until_everything_queued_was_handed_on() -> None:
    from serving.worker import MonitorHandoff

    release = threading.Event()
    seen: list[str] = []

    def sink(_predictor: Any, _recorder: Any, cases: list[Any]) -> None:
        release.wait(10)
        seen.extend(case[0] for case in cases)

    handoff = MonitorHandoff(sink)
    assert handoff.drain(0.01), "nothing queued: drained at once"
    for k in range(3):
        handoff.submit(_predictor(), object(), [_case(k)])
    assert not handoff.drain(0.05), "the sink still holds them"
    release.set()
    assert handoff.drain(10)
    assert seen == [_case(k)[0] for k in range(3)]
