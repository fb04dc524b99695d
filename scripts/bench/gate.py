"""Benchmark: the governance gate's decisions, held against their targets, with a plain registry
lookup (``get_model_version_by_alias``) measured in the same run on the same store.

Runs in a throw-away RADGATE_HOME (embedded SQLite MLflow + catalog) with an approved, promoted
version whose artifact is ``--artifact-mb`` MiB. Figures (median and spread over the rounds):

- ``value``: a cached decision in a warm process, ms (target < 1 ms);
- ``cold_process_ms``: the first decision of a new process, after the start-up a replica does
  before its first request (imports, ``Gate.warm_up``), with no decision or governance position
  cached in it (a replica that just started; target < 50 ms): it reads the registry and the
  audit chain, and takes the artifact's hash from the MACed record an earlier process left
  (``governance/approvals/digests.py``) after checking it against the files' identities; the
  imports and the warm-up are reported beside it;
- ``cold_process_rehash_ms``: the same with no record (removed before each round): the
  replica reads every byte of the artifact, as the first decision after the weights were
  written does (reported, not held against the target);
- ``revoke_to_refusal_s``: from the revocation (the audit entry and the alias removed) to the
  first refusal by a running service that asks the gate as the serving ingress does, in its own
  process (target < 1 s);
- in-process cold (``fresh=True``) and re-check (decision expired, artifact hash cached) times.

Exits 1 when a figure misses its target (``--no-fail`` to explore). One JSON line at the end.

    .venv/bin/python scripts/bench/gate.py [--iterations 2000] [--rounds 7] [--artifact-mb 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_no_fail, finish, met, spread, time_rounds

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

NAME, ALIAS = "bench-model", "production"
CACHED_TARGET_MS = 1.0
COLD_PROCESS_TARGET_MS = 50.0
REVOKE_TARGET_S = 1.0


def _cold_child() -> None:
    """One decision in this new process, after the start-up a serving replica does before its
    first request (the imports, then ``Gate.warm_up``: the registry client and its store, the
    audit log's catalog, the ORM mappers, the policy), with no decision or governance position
    cached in it: the registry and the audit chain are read, and the artifact's hash comes from
    the record an earlier process left if there is one (its files' identities are checked),
    else from reading every byte."""
    start = time.perf_counter()
    import mlflow.tracking  # noqa: F401 (a replica imports it at start-up, before any request)

    from governance.approvals import Gate

    imported = time.perf_counter()
    gate = Gate()
    gate.warm_up()
    warmed = time.perf_counter()
    decision = gate(NAME, ALIAS)
    done = time.perf_counter()
    timings = {
        "import_ms": 1000 * (imported - start),
        "warm_up_ms": 1000 * (warmed - imported),
        "decision_ms": 1000 * (done - warmed),
    }
    print(json.dumps({"allowed": decision.allowed, **timings}))


def _service_child(ready: Path, refused: Path) -> None:
    """A running service: asks the gate before every request, as the serving ingress does, and
    records the wall-clock time of its first refusal."""
    from governance.approvals import Gate, registry_client

    gate = Gate(registry_client())
    deadline = time.time() + 120
    while time.time() < deadline:
        decision = gate(NAME, ALIAS)
        now = time.time()
        if decision.allowed:
            if not ready.exists():
                ready.write_text("ready")
        else:
            refused.write_text(json.dumps({"refused_at": now, "reasons": decision.reasons[:3]}))
            return
        time.sleep(0.002)  # ~500 requests/s
    raise SystemExit("the service never saw the revocation")


def _child_env(home: Path) -> dict[str, str]:
    return {**os.environ, "RADGATE_HOME": str(home)}


def _cold_process_rounds(
    home: Path, rounds: int, *, recorded: bool = True
) -> tuple[list[float], list[float], list[float]]:
    """Decisions, imports and warm-ups of ``rounds`` new processes, in ms. Without ``recorded``
    the artifact digest records are removed before each process (it hashes the artifact)."""
    decisions, imports, warm_ups = [], [], []
    for _ in range(rounds):
        if not recorded:
            shutil.rmtree(home / "cache" / "artifact-digests", ignore_errors=True)
        done = subprocess.run(
            [sys.executable, __file__, "--cold-child"],
            env=_child_env(home),
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if not result["allowed"]:
            raise SystemExit("the cold process was denied the approved version")
        decisions.append(result["decision_ms"])
        imports.append(result["import_ms"])
        warm_ups.append(result["warm_up_ms"])
    return decisions, imports, warm_ups


def _revoke_to_refusal(home: Path, cast: Any, payload: bytes) -> tuple[float, Any]:
    """Approve and promote a fresh version, start the service, revoke; seconds to refusal."""
    from governance.approvals import Workflow, registry_client
    from governance.testing import approved_version

    client = registry_client()
    version = approved_version(client, NAME, ALIAS, cast, payload=payload)
    scratch = Path(tempfile.mkdtemp(prefix="radgate-bench-gate-svc-"))
    ready, refused = scratch / "ready", scratch / "refused.json"
    service = subprocess.Popen(
        [sys.executable, __file__, "--service-child", str(ready), str(refused)], env=_child_env(home)
    )
    try:
        deadline = time.time() + 120
        while not ready.exists():
            if service.poll() is not None or time.time() > deadline:
                raise SystemExit("the gate service did not start")
            time.sleep(0.01)
        time.sleep(0.5)  # the service is in its steady state: cached decisions
        revoked_at = time.time()
        Workflow(client).revoke(cast["doc"], NAME, version, "benchmark: revoke to refusal")
        service.wait(timeout=120)
        outcome = json.loads(refused.read_text())
    finally:
        if service.poll() is None:
            service.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return outcome["refused_at"] - revoked_at, outcome["reasons"]


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--iterations", type=int, default=2000, help="cached decisions to time")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the cold and revoke figures")
    parser.add_argument(
        "--artifact-mb", type=int, default=30, help="artifact size (DenseNet121 is about 30 MiB)"
    )
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--service-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_child:
        _cold_child()
        return 0
    if args.service_child:
        _service_child(*args.service_child)
        return 0

    home = Path(tempfile.mkdtemp(prefix="radgate-bench-gate-"))
    os.environ["RADGATE_HOME"] = str(home)
    os.environ.setdefault("RADGATE_PROJECT_KEY", os.urandom(32).hex())
    os.environ.pop("RADGATE_MLFLOW_TRACKING_URI", None)
    os.environ.pop("RADGATE_CATALOG_URL", None)
    try:
        from governance.approvals import Gate, registry_client
        from governance.testing import approved_version, create_cast

        client = registry_client()
        cast = create_cast()
        payload = os.urandom(args.artifact_mb * 1024 * 1024)
        version = approved_version(client, NAME, ALIAS, cast, payload=payload)
        created = time.time()

        def lookup() -> object:
            return client.get_model_version_by_alias(NAME, ALIAS)

        lookup_ms = [1000 * s for s in time_rounds(lookup, 200)]
        gate = Gate(client)
        first = gate(NAME, ALIAS, fresh=True)
        if not first.allowed:
            raise SystemExit(f"the approved version was denied: {first.reasons}")
        cold_ms = [1000 * s for s in time_rounds(lambda: gate(NAME, ALIAS, fresh=True), 20)]
        gate(NAME, ALIAS)
        cached_ms = [1000 * s for s in time_rounds(lambda: gate(NAME, ALIAS), args.iterations)]
        if not gate(NAME, ALIAS).cached:
            raise SystemExit("the gate did not cache its decision")
        rechecking = Gate(client, ttl_s=0)  # decision expired, artifact hash still cached
        rechecking(NAME, ALIAS)
        recheck_ms = [1000 * s for s in time_rounds(lambda: rechecking(NAME, ALIAS), 20)]
        # The deploy-time check a replica's start follows: every byte hashed, the hash recorded
        # once the artifact's files have settled (written at least SETTLE_S ago).
        from governance.approvals.digests import SETTLE_S

        time.sleep(max(0.0, SETTLE_S + 0.1 - (time.time() - created)))
        if not gate(NAME, ALIAS, fresh=True).allowed:
            raise SystemExit("the deploy-time check denied the approved version")
        process_ms, import_ms, warm_up_ms = _cold_process_rounds(home, args.rounds)
        rehash_ms, _, _ = _cold_process_rounds(home, args.rounds, recorded=False)
        revokes, reasons = [], []
        for _ in range(args.rounds):
            seconds, why = _revoke_to_refusal(home, cast, os.urandom(1024 * 1024))
            revokes.append(seconds)
            reasons = why
    finally:
        shutil.rmtree(home, ignore_errors=True)

    cached, process, revoke = spread(cached_ms), spread(process_ms, 2), spread(revokes, 3)
    result = {
        "bench": "gate",
        "value": cached["median"],
        "target": CACHED_TARGET_MS,
        "better": "lower",
        "unit": "ms",
        "metric": "cached decision in a warm process (median)",
        "cached_ms": cached,
        "cold_process_ms": process,
        "cold_process_target_ms": COLD_PROCESS_TARGET_MS,
        "cold_process_import_ms": spread(import_ms, 1),
        "cold_process_warm_up_ms": spread(warm_up_ms, 1),
        "cold_process_rehash_ms": spread(rehash_ms, 2),
        "revoke_to_refusal_s": revoke,
        "revoke_to_refusal_target_s": REVOKE_TARGET_S,
        "refusal_reasons": reasons,
        "cold_in_process_ms": spread(cold_ms, 2),
        "recheck_ms": spread(recheck_ms, 2),
        "registry_lookup_ms": spread(lookup_ms, 3),
        "cached_vs_lookup": round(float(spread(lookup_ms)["median"]) / float(cached["median"]), 1),
        "artifact_mb": args.artifact_mb,
        "version": version,
        "store": "embedded sqlite",
        "rounds": args.rounds,
    }
    checks = {
        "cold_process_ms": met(float(process["median"]), COLD_PROCESS_TARGET_MS, "lower"),
        "revoke_to_refusal_s": met(float(revoke["median"]), REVOKE_TARGET_S, "lower"),
    }
    return finish(result, no_fail=args.no_fail, checks=checks)


if __name__ == "__main__":
    sys.exit(main())
