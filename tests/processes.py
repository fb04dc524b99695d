"""Ending the real servers tests start (PostgreSQL, MLflow, moto, uvicorn): ask, then insist."""

from __future__ import annotations

import subprocess
from typing import Any

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds for a clean shutdown, then SIGKILL: a server
    stuck in its shutdown must not hang the test session or outlive it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
