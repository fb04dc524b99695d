"""What every benchmark in scripts/bench shares: timing rounds, median and spread, the closing
JSON line and the exit status.

A benchmark measures its baseline in the same run, then calls :func:`finish` with its result:
one JSON line ``{"bench", "value", "target", "better", "met", ...}`` on stdout, and exit status 1
when the value misses the target (``--no-fail``, added by :func:`add_no_fail`, reports without
failing: for exploration). Import it from a benchmark as ``from _common import ...`` (the
script's own folder is first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

__all__ = ["add_no_fail", "finish", "met", "spread", "time_rounds"]

Better = Literal["higher", "lower"]


def add_no_fail(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--no-fail``: report a miss in the JSON line but exit 0."""
    parser.add_argument(
        "--no-fail", action="store_true", help="exit 0 even when the figure misses its target"
    )
    return parser


def spread(samples: Sequence[float], digits: int = 4) -> dict[str, float | int]:
    """Median and spread of ``samples``: min, max, interquartile range and the count."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "median": round(statistics.median(ordered), digits),
        "min": round(ordered[0], digits),
        "max": round(ordered[-1], digits),
        "iqr": round(q3 - q1, digits),
        "n": len(ordered),
    }


def time_rounds(fn: Callable[[], object], rounds: int) -> list[float]:
    """Wall time of ``rounds`` calls of ``fn``, in seconds each."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def met(value: float, target: float, better: Better) -> bool:
    """Whether ``value`` meets ``target``; ``better`` says which direction is good (equal meets it)."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    return value >= target if better == "higher" else value <= target


def finish(result: dict[str, Any], *, no_fail: bool = False, checks: dict[str, bool] | None = None) -> int:
    """Print ``result`` as the closing JSON line (with ``met``) and return the exit status.

    ``result`` holds at least ``bench``, ``value``, ``target`` and ``better``. ``checks`` are
    further figures held against targets of their own (name -> met); any miss fails the run.
    """
    for key in ("bench", "value", "target", "better"):
        if key not in result:
            raise ValueError(f"benchmark result lacks {key!r}")
    headline = met(float(result["value"]), float(result["target"]), result["better"])
    misses = [name for name, ok in (checks or {}).items() if not ok]
    if not headline:
        misses.insert(0, "value")
    line = {**result, "met": not misses}
    if misses:
        line["missed"] = misses
    print(json.dumps(line), flush=True)
    if misses and not no_fail:
        print(f"{result['bench']}: missed its target ({', '.join(misses)})", file=sys.stderr)
        return 1
    return 0
