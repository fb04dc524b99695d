"""Benchmark: the gate's incremental audit-chain check against a full verification, same log.

A throw-away RADGATE_HOME gets ``--entries`` signed audit entries. Measured in the same run:

- baseline: ``AuditLog.verify()``, the full recomputation from genesis (what the audit page
  did on every view and what a check without a cached position costs);
- ``value``: ``ChainGuard.check()`` of a guard that verified the log once, after one more
  entry is appended (what each gate decision pays): the ratio incremental / full, target
  <= 0.05 (the incremental check must not grow with the log);
- the first check of a new guard (a new process) before any checkpoint exists (it walks from
  genesis, then signs a checkpoint), and of the next new guard (from that checkpoint).

    .venv/bin/python scripts/bench/audit_chain.py [--entries 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import add_no_fail, finish, spread, time_rounds

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TARGET_RATIO = 0.05


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--entries", type=int, default=20_000, help="audit entries in the log")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of each figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radgate-bench-chain-") as home:
        os.environ["RADGATE_HOME"] = home
        os.environ.pop("RADGATE_CATALOG_URL", None)
        from governance.audit import AuditLog, ChainGuard, PendingEntry

        log = AuditLog()
        batch = [PendingEntry("svc", "serve.predict", "model:m/1", {"i": i}) for i in range(500)]
        for _ in range(max(1, args.entries // len(batch))):
            log.append_many(batch)
        full = time_rounds(lambda: log.verify(), args.rounds)
        from governance.audit.chain import checkpoint_path

        def from_genesis() -> None:
            checkpoint_path(log).unlink(missing_ok=True)
            ChainGuard(log).check()

        first = time_rounds(from_genesis, args.rounds)
        guard = ChainGuard(log)
        guard.check()

        def incremental() -> None:
            log.append("svc", "serve.predict", "model:m/1", {"i": -1})
            guard.check()

        def append_only() -> None:
            log.append("svc", "serve.predict", "model:m/1", {"i": -2})

        appended = time_rounds(append_only, args.rounds)
        with_check = time_rounds(incremental, args.rounds)
        head = guard.check()
        ChainGuard(log).check()  # a walk from genesis signs a checkpoint at the head
        from_checkpoint = time_rounds(lambda: ChainGuard(log).check(), args.rounds)
    check_ms = [max(0.0, (w - a) * 1000) for w, a in zip(with_check, appended, strict=True)]
    full_ms = [s * 1000 for s in full]
    ratio = statistics.median(check_ms) / statistics.median(full_ms)
    result = {
        "bench": "audit_chain",
        "value": round(ratio, 4),
        "target": TARGET_RATIO,
        "better": "lower",
        "unit": "incremental check / full verification (median ms)",
        "entries": head.seq,
        "full_verify_ms": spread(full_ms, 2),
        "incremental_check_ms": spread(check_ms, 2),
        "new_guard_from_genesis_ms": spread([s * 1000 for s in first], 2),
        "new_guard_from_checkpoint_ms": spread([s * 1000 for s in from_checkpoint], 2),
        "rounds": args.rounds,
    }
    return finish(result, no_fail=args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
