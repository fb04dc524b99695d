"""Running a coroutine to completion from a test, whatever earlier tests left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["run_on_own_loop"]

_T = TypeVar("_T")


def run_on_own_loop(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on a thread of its own: an earlier test (Playwright, anyio) may leave an
    event loop marked running on the main thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
