"""The ingress process switches threads at the same short GIL interval as a model process:
each request's parsing and gate run on a worker thread and come back to the event loop, and
with CPython's default 5 ms interval each hand-over can wait for the other thread's turn."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def switch_interval() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # CPython's default
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def test_an_ingress_without_a_colocated_model_sets_the_short_interval(
    switch_interval: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving import app
    from serving.config import ServeConfig

    # Only the ingress's own start-up runs: no gate, no service, no Ray replica context.
    monkeypatch.setattr(
        app, "IngressService", lambda config, clients: types.SimpleNamespace(gate=lambda *a, **k: None)
    )
    monkeypatch.setattr(app, "install_service", lambda service: None)
    monkeypatch.setattr(app, "_freeze_heap", lambda: None)
    replica = types.SimpleNamespace(rank=types.SimpleNamespace(rank=1))  # not the drift checker
    monkeypatch.setattr(app.serve, "get_replica_context", lambda: replica)
    config = ServeConfig.model_validate({"models": [{"name": "remote-model", "colocate": False}]})
    assert not config.models[0].colocated
    # The class as written (Ray Serve wraps it in an ASGI ingress class with an async __init__).
    deployment: Any = app.Ingress  # a Ray Serve Deployment at run time
    ingress = deployment.func_or_class.__mro__[1]
    assert ingress.__module__ == app.__name__ and ingress.__qualname__ == "Ingress"
    ingress.__init__(object.__new__(ingress), config.model_dump_json(), {"remote-model": object()})
    assert sys.getswitchinterval() == pytest.approx(0.0005)
