"""Benchmark: the governance gate's decision time, cold and cached, against a plain registry
lookup (``get_model_version_by_alias``) measured in the same run on the same store.

Runs in a throw-away RADGATE_HOME (embedded SQLite MLflow + catalog) with an approved,
promoted version whose artifact is ``--artifact-mb`` MiB. Ends with one JSON line; the value
is the cached decision's median in milliseconds (target: under 1 ms).

    .venv/bin/python scripts/bench/gate.py [--iterations 2000] [--artifact-mb 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _median_ms(fn: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="cached decisions to time")
    parser.add_argument("--cold", type=int, default=20, help="cold decisions to time")
    parser.add_argument(
        "--artifact-mb", type=int, default=30, help="artifact size (DenseNet121 is about 30 MiB)"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="radgate-bench-gate-"))
    os.environ["RADGATE_HOME"] = str(home)
    os.environ.setdefault("RADGATE_PROJECT_KEY", os.urandom(32).hex())
    os.environ.pop("RADGATE_MLFLOW_TRACKING_URI", None)
    os.environ.pop("RADGATE_CATALOG_URL", None)

    from governance.approvals import Gate, registry_client
    from governance.testing import approved_version

    client = registry_client()
    payload = os.urandom(args.artifact_mb * 1024 * 1024)
    version = approved_version(client, "bench-model", "production", payload=payload)

    lookup_ms, lookup_p99 = _median_ms(
        lambda: client.get_model_version_by_alias("bench-model", "production"), 200
    )
    gate = Gate(client)
    first = gate("bench-model", "production", fresh=True)
    assert first.allowed, first.reasons
    cold_ms, cold_p99 = _median_ms(lambda: gate("bench-model", "production", fresh=True), args.cold)
    gate("bench-model", "production")
    cached_ms, cached_p99 = _median_ms(lambda: gate("bench-model", "production"), args.iterations)
    assert gate("bench-model", "production").cached
    # Decision expired but the artifact hash still cached: the per-request path after each TTL.
    rechecking = Gate(client, ttl_s=0)
    rechecking("bench-model", "production")
    recheck_ms, recheck_p99 = _median_ms(lambda: rechecking("bench-model", "production"), args.cold)

    shutil.rmtree(home, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "gate",
                "value": round(cached_ms, 4),
                "target": 1.0,
                "better": "lower",
                "unit": "ms",
                "cached_p99_ms": round(cached_p99, 4),
                "cold_ms": round(cold_ms, 2),
                "cold_p99_ms": round(cold_p99, 2),
                "recheck_ms": round(recheck_ms, 2),
                "recheck_p99_ms": round(recheck_p99, 2),
                "registry_lookup_ms": round(lookup_ms, 3),
                "registry_lookup_p99_ms": round(lookup_p99, 3),
                "cached_vs_lookup": round(lookup_ms / cached_ms, 1),
                "artifact_mb": args.artifact_mb,
                "version": version,
                "store": "embedded sqlite",
            }
        )
    )


if __name__ == "__main__":
    main()
