"""Benchmark: start-up of the ``radgate`` CLI against ``python -c pass`` in the same run.

Each round runs, interleaved so that all see the same machine load: ``python -c pass`` (the
interpreter's own start-up, the baseline), ``radgate --version``, ``radgate --help``, the help
of light subcommands (``deid``, ``catalog``, ``users``, ``audit verify``) and the light commands
themselves as an auditor runs them: ``radgate catalog``, ``radgate users list`` and ``radgate
audit verify`` (authenticated by token, over a throw-away RADGATE_HOME whose first admin and
auditor the benchmark creates). Wall time of the whole process, median and spread over the
rounds, with each process's CPU time (user + system) and the load average beside it. The value
is the median of ``radgate --help`` in seconds (target: under 0.5 s); every other radgate
command is held against the same target.

    .venv/bin/python scripts/bench/cli_startup.py [--rounds 9] [--no-fail]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_no_fail, finish, spread

TARGET_S = 0.5

COMMANDS: dict[str, list[str]] = {
    "version": ["--version"],
    "help": ["--help"],
    "deid_help": ["deid", "--help"],
    "catalog_help": ["catalog", "--help"],
    "users_help": ["users", "--help"],
    "audit_verify_help": ["audit", "verify", "--help"],
    # The light commands themselves, run with an auditor's token (a role each of them admits).
    "catalog": ["catalog"],
    "users_list": ["users", "list"],
    "audit_verify": ["audit", "verify"],
}


def _radgate() -> list[str]:
    script = Path(sys.executable).with_name("radgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "radgate"]


def _add_user(radgate: list[str], env: dict[str, str], name: str, role: str) -> str:
    """Create a user with ``radgate users add`` and return the token it prints once."""
    done = subprocess.run(
        [*radgate, "users", "add", name, "--role", role],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one process, in seconds."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {child.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (medians reported)")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")

    home = Path(tempfile.mkdtemp(prefix="radgate-bench-cli-"))
    env = {**os.environ, "RADGATE_HOME": str(home)}
    env.setdefault("RADGATE_PROJECT_KEY", os.urandom(32).hex())
    for name in ("RADGATE_TOKEN", "RADGATE_TOKEN_FILE", "RADGATE_CATALOG_URL"):
        env.pop(name, None)
    radgate = _radgate()
    try:
        admin = _add_user(radgate, env, "bench-admin", "admin")
        env["RADGATE_TOKEN"] = _add_user(radgate, {**env, "RADGATE_TOKEN": admin}, "bench-auditor", "auditor")
        for argv in COMMANDS.values():  # warm the page cache and bytecode once, untimed
            _run([*radgate, *argv], env)
        runs = {
            "python_pass": [sys.executable, "-c", "pass"],
            **{n: [*radgate, *a] for n, a in COMMANDS.items()},
        }
        samples: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, argv in runs.items():
                wall, used = _run(argv, env)
                samples[name].append(wall)
                cpu[name].append(used)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    stats = {name: spread(values) for name, values in samples.items()}
    baseline = stats["python_pass"]["median"]
    result: dict[str, object] = {
        "bench": "cli_startup",
        "value": stats["help"]["median"],
        "target": TARGET_S,
        "better": "lower",
        "unit": "s",
        "metric": "wall time of `radgate --help` (median over rounds)",
        "baseline_python_pass_s": baseline,
        "help_over_baseline_s": round(float(stats["help"]["median"]) - float(baseline), 4),
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        **{f"{name}_s": s for name, s in stats.items()},
        # CPU time (user + system) of the same processes: what the start-up costs on a quiet
        # machine, where wall time approaches it; on a loaded one wall time also holds the wait.
        "cpu_s": {name: spread(values)["median"] for name, values in cpu.items()},
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    checks = {f"{name} < {TARGET_S}s": float(stats[name]["median"]) < TARGET_S for name in COMMANDS}
    return finish(result, no_fail=args.no_fail, checks=checks)


if __name__ == "__main__":
    sys.exit(main())
