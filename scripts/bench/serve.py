"""Benchmark: serving latency and throughput through Ray Serve, in-process and Triton backends,
each as a ratio over raw decode + preprocess + torch forward measured in the same run.

Throw-away RADGATE_HOME; a model (``--network``, ``--size``) registered in embedded MLflow,
approved and promoted through the real workflow, with a reference profile so that live
monitoring records every request (``--no-monitoring``: none); real DICOM bodies (demo
radiographs). Every served request goes through auth, input validation, the gate (cached), the
audit log, metrics and the monitoring recorder, exactly as in production.
Raw baseline: ``LoadedModel.preprocess(bytes)`` + the replica's forward (the same TorchScript
trace of the same version, :class:`serving.model.InProcessForward`) at batch 1 (latency) and preprocess
+ batched forward at batch ``--concurrency`` over as many images as the served throughput run
(throughput), with the same torch threads as the replica. It runs twice around each served
measurement, with the app deployed and idle (the box is shared and its load drifts), and keeps
its better figure of the two, so the ratios are never flattered.
Fields ``*_replica_ms`` and ``*_ingress_ms`` are the medians of the server-side timings at
batch 1 (inside the model replica; inside the ingress, replica included), so the overhead can
be split: client p50 - ingress = the HTTP hop (straight into the ingress replica, Ray Serve
direct ingress, as `radgate serve` runs; ``--proxy``: through Ray Serve's HTTP proxy actor);
ingress - replica = ingress work (+ the handle hop for a model not colocated). The client p50
- ingress also holds what the ingress does outside its ``total`` timing: authentication before
the route and the audit commit after it (``*_audit_ms``: that commit, median at batch 1).
Triton: over the sequential (batch-1) requests, ``triton_server_ms`` is Triton's own time per
request (its statistics, means: queue + the model's execution + the copies to and from the
Python backend's stub: ``triton_queue_ms``, ``triton_b1_input_ms``, ``triton_b1_infer_ms``,
``triton_b1_output_ms``); ``replica_forward_ms`` - that = the gRPC client and hop.

Each backend is measured in ``--rounds`` such bracketed rounds (7); every ratio is taken per
round against that round's raw figures, and reported as the median with its spread.

Ray Serve's own overhead (``ray_serve_trivial``): a deployment that answers "ok" and does
nothing, at the same direct-ingress port, through the HTTP proxy actor and through a
``DeploymentHandle``, against the same trivial ASGI app under uvicorn alone (p50 per round;
overhead = served - uvicorn in the same round).

Targets: p50 at most 1.1x raw in-process and 1.2x through Triton; throughput at least 0.95x raw
batched forward for both; no failed request. Exits 1 when one is missed (``--no-fail`` to
explore). The JSON ``value`` is the in-process p50 ratio; the other ratios are fields of the
same line.

    .venv/bin/python scripts/bench/serve.py [--network densenet121] [--size 224] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_no_fail, finish, spread

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

MODEL = "bench-model"
#: p50 served / raw at batch 1, per backend (Triton: a server process and a gRPC hop more).
P50_TARGET = {"inprocess": 1.1, "triton": 1.2}
#: Served throughput / raw batched forward, every backend.
THROUGHPUT_TARGET = 0.95


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def raw_baseline(
    loaded: Any, forward: Any, bodies: list[bytes], requests: int, concurrency: int
) -> dict[str, float]:
    """Decode + preprocess + forward in this process: ``requests`` at batch 1 (latency), then the
    same ``2 * requests`` images as the served throughput run, in batches of ``concurrency``.
    ``forward``: the replica's own forward (``serving.model.InProcessForward``: the same
    TorchScript trace returning logits and embedding, the same weights and torch threads)."""
    import torch

    with torch.inference_mode():
        for body in bodies[:3]:
            forward.with_embedding(loaded.preprocess(body).numpy())
        latencies, forwards = [], []
        for i in range(requests):
            start = time.perf_counter()
            tensor = loaded.preprocess(bodies[i % len(bodies)])
            preprocessed = time.perf_counter()
            forward.with_embedding(tensor.numpy())
            latencies.append((time.perf_counter() - start) * 1000)
            forwards.append((time.perf_counter() - preprocessed) * 1000)
        rounds = max(2, requests * 2 // concurrency)
        start = time.perf_counter()
        for r in range(rounds):
            batch = torch.cat([loaded.preprocess(bodies[(r + k) % len(bodies)]) for k in range(concurrency)])
            forward.with_embedding(batch.numpy())
        throughput = rounds * concurrency / (time.perf_counter() - start)
    return {
        "p50_ms": _pct(latencies, 0.5),
        "p95_ms": _pct(latencies, 0.95),
        "forward_ms": _pct(forwards, 0.5),
        "throughput": throughput,
    }


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each process on the box, by name and pid."""
    import psutil

    used: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            times = proc.cpu_times()
            cmd = " ".join(proc.info.get("cmdline") or [])[:60] or proc.info.get("name") or "?"
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        used[f"{cmd} [{proc.pid}]"] = times.user + times.system
    return used


def _cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Each process's CPU milliseconds per request over a phase (top 8; ``total``: all)."""
    spent = {k: (after[k] - before.get(k, 0.0)) * 1000 / requests for k in after}
    top = dict(sorted(spent.items(), key=lambda kv: -kv[1])[:8])
    return {"total": round(sum(spent.values()), 1), **{k: round(v, 1) for k, v in top.items()}}


async def _measure(
    url: str,
    token: str,
    bodies: list[bytes],
    requests: int,
    concurrency: int,
    *,
    cpu: bool = False,
    sequential: Any = None,
) -> dict[str, float]:
    """``sequential``: called before and after the sequential (batch-1) requests; what it
    returns after them (a dict of figures) joins the result."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
    predict = f"{url}/v1/models/{MODEL}/predict"
    async with httpx.AsyncClient(timeout=120) as client:
        for body in bodies[:3]:
            (await client.post(predict, content=body, headers=headers)).raise_for_status()
        answered = 3 + requests  # warm-up and sequential requests (each checked); then concurrent
        latencies = []
        server: list[dict[str, float]] = []
        cpu_before = _cpu_by_process() if cpu else {}
        mark = sequential() if sequential else None
        for i in range(requests):
            start = time.perf_counter()
            reply = await client.post(predict, content=bodies[i % len(bodies)], headers=headers)
            reply.raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)
            server.append(reply.json()["timings_ms"])
        extra: dict[str, float] = sequential(mark) if sequential else {}
        if cpu:
            # Where the CPU of a batch-1 request goes, every process of the box counted (other
            # people's load included: read it with the load average).
            print(
                "cpu ms per batch-1 request: "
                + json.dumps(_cpu_per_request(cpu_before, _cpu_by_process(), requests)),
                file=sys.stderr,
            )
        errors = 0
        queue = list(range(requests * 2))

        async def worker() -> None:
            nonlocal errors
            while queue:
                i = queue.pop()
                reply = await client.post(predict, content=bodies[i % len(bodies)], headers=headers)
                errors += reply.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        throughput = requests * 2 / (time.perf_counter() - start)
    return {
        "answered": answered + requests * 2 - errors,
        "p50_ms": _pct(latencies, 0.5),
        "p95_ms": _pct(latencies, 0.95),
        "throughput": throughput,
        "errors": errors,
        # Where a batch-1 request's time goes (medians): inside the model replica, inside the
        # ingress (auth, parse, gate, hop to the replica, audit) and the rest (HTTP proxy hop).
        "replica_ms": _pct([t["preprocess"] + t["forward"] + t["results"] for t in server], 0.5),
        "replica_forward_ms": _pct([t["forward"] for t in server], 0.5),
        "ingress_ms": _pct([t["total"] for t in server], 0.5),
        "audit_ms": _pct([t.get("audit", 0.0) for t in server], 0.5),
        **extra,
    }


def _bracketed(
    loaded: Any, forward: Any, bodies: list[bytes], args: argparse.Namespace, served: Any
) -> tuple[dict[str, float], dict[str, float]]:
    """Raw baseline, served measurement, raw again (the box is shared and its load drifts); the
    baseline is the better of its two runs on each figure, so the ratios are never flattered."""
    first = raw_baseline(loaded, forward, bodies, args.requests, args.concurrency)
    result: dict[str, float] = served()
    second = raw_baseline(loaded, forward, bodies, args.requests, args.concurrency)
    raw = {
        "p50_ms": min(first["p50_ms"], second["p50_ms"]),
        "p95_ms": min(first["p95_ms"], second["p95_ms"]),
        "forward_ms": min(first["forward_ms"], second["forward_ms"]),
        "throughput": max(first["throughput"], second["throughput"]),
    }
    return raw, result


def _triton_stats(url: str) -> dict[str, int]:
    """Triton's own cumulative statistics of the bench model (nanoseconds and counts): time in
    the server per request (``success``: queue + compute), queue, and at batch 1 the input copy,
    the model's execution and the output copy (the Python backend's IPC with its stub)."""
    from serving.triton.client import grpc_client

    model = grpc_client(url).get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    stats = model.get("inference_stats", {})
    out = {f"{k}_{u}": int(stats.get(k, {}).get(u, 0)) for k in ("success", "queue") for u in ("ns", "count")}
    for batch in model.get("batch_stats", []):
        if int(batch.get("batch_size", 0)) == 1:
            for k in ("compute_input", "compute_infer", "compute_output"):
                out[f"b1_{k}_ns"] = int(batch.get(k, {}).get("ns", 0))
                out[f"b1_{k}_count"] = int(batch.get(k, {}).get("count", 0))
    return out


def _triton_split(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Per-request milliseconds inside Triton between two snapshots (``after - before``)."""

    def per(key: str) -> float:
        count = after.get(f"{key}_count", 0) - before.get(f"{key}_count", 0)
        return (after.get(f"{key}_ns", 0) - before.get(f"{key}_ns", 0)) / max(count, 1) / 1e6

    return {
        "triton_server_ms": per("success"),
        "triton_queue_ms": per("queue"),
        "triton_b1_input_ms": per("b1_compute_input"),
        "triton_b1_infer_ms": per("b1_compute_infer"),
        "triton_b1_output_ms": per("b1_compute_output"),
    }


def _replica_rss_mb() -> float:
    import psutil

    # Only this run's replicas (descendants of this driver's Ray): on a shared box other people's
    # Ray Serve replicas carry the same process title.
    total = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("ray::ServeReplica" in part for part in proc.cmdline()):
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


async def _soak(
    url: str, token: str, bodies: list[bytes], seconds: float, concurrency: int
) -> dict[str, float]:
    """Load test: ``concurrency`` clients for ``seconds``; errors and replica memory over time."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/dicom"}
    predict = f"{url}/v1/models/{MODEL}/predict"
    done = errors = 0
    rss = [_replica_rss_mb()]
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=120) as client:

        async def worker(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.monotonic() < deadline:
                reply = await client.post(predict, content=bodies[i % len(bodies)], headers=headers)
                errors += reply.status_code != 200
                done += 1
                i += concurrency

        async def sampler() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(max(1.0, seconds / 10))
                rss.append(_replica_rss_mb())

        await asyncio.gather(sampler(), *(worker(k) for k in range(concurrency)))
    return {
        "requests": done,
        "errors": errors,
        "rps": done / seconds,
        "rss_first_mb": round(rss[1] if len(rss) > 1 else rss[0], 1),
        "rss_last_mb": round(rss[-1], 1),
        "rss_max_mb": round(max(rss), 1),
    }


# The trivial model: one ASGI callable answering "ok", served by Ray Serve and, as the baseline,
# by uvicorn alone in a process of its own (what Ray Serve's HTTP serving runs on).
_TRIVIAL_UVICORN = """
import sys
import uvicorn
from starlette.responses import PlainTextResponse


async def app(scope, receive, send):
    await PlainTextResponse("ok")(scope, receive, send)


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="off")
"""


def _proxy_port(exclude: int) -> int | None:
    """The port Ray Serve's HTTP proxy actor of this run listens on (``run`` picks a free one)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if not any("ProxyActor" in part for part in proc.cmdline()):
                continue
            ports = [
                c.laddr.port
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1" and c.laddr.port != exclude
            ]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if ports:
            return min(ports)
    return None


def _http_p50(url: str, requests: int) -> float:
    import httpx

    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            client.get(url).raise_for_status()
        samples = []
        for _ in range(requests):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            samples.append((time.perf_counter() - start) * 1000)
    return _pct(samples, 0.5)


def ray_serve_overhead(port: int, rounds: int, requests: int) -> dict[str, Any]:
    """Ray Serve's own cost per request, with a model that does nothing: p50 of a GET answered
    by a trivial deployment (direct ingress, as ``radgate serve`` runs; through the HTTP proxy
    actor; a ``DeploymentHandle`` call from the driver, the hop to a model that is not
    colocated) against the same trivial ASGI app under uvicorn alone, in alternating rounds.
    Overheads are per round (served p50 - uvicorn p50), then median and spread."""
    import subprocess

    from ray import serve
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    from serving.net import free_port

    @serve.deployment(name="trivial", ray_actor_options={"num_cpus": 0})
    class Trivial:
        async def __call__(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        async def nothing(self) -> str:
            return "ok"

    handle = serve.run(Trivial.bind(), name="trivial", route_prefix="/", blocking=False)  # type: ignore[attr-defined]
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", _TRIVIAL_UVICORN, str(bare_port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _http_p50(f"http://127.0.0.1:{bare_port}/", 1)
                _http_p50(f"http://127.0.0.1:{port}/", 1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        proxy = _proxy_port(exclude=port)
        paths = {"uvicorn": bare_port, "direct": port, **({"proxy": proxy} if proxy else {})}
        p50s: dict[str, list[float]] = {k: [] for k in [*paths, "handle"]}
        for _ in range(rounds):
            for key, path_port in paths.items():
                p50s[key].append(_http_p50(f"http://127.0.0.1:{path_port}/", requests))
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                handle.nothing.remote().result()
                samples.append((time.perf_counter() - start) * 1000)
            p50s["handle"].append(_pct(samples, 0.5))
    finally:
        bare.terminate()
        bare.wait(timeout=10)
        serve.delete("trivial")
    out: dict[str, Any] = {f"{k}_p50_ms": spread(v, 3) for k, v in p50s.items()}
    for key in ("direct", "proxy"):
        if key in p50s:
            over = [a - b for a, b in zip(p50s[key], p50s["uvicorn"], strict=True)]
            out[f"{key}_overhead_ms"] = spread(over, 3)
    return out


def _monitoring_records(answered: int, *, timeout: float = 180.0) -> dict[str, int]:
    """Live-monitoring records of the bench model once the recorder processes are done (their
    count has not grown for 5 s, or ``timeout``), against the requests answered (sequential,
    concurrent and warm-up, of every backend, the soak not included)."""
    from sqlalchemy import func, select

    from governance.catalog.db import open_catalog
    from serving.monitoring.models import LiveRecord

    catalog = open_catalog()
    deadline, last, steady = time.monotonic() + timeout, -1, time.monotonic()
    while True:
        with catalog.session() as session:
            count = int(
                session.scalar(
                    select(func.count()).select_from(LiveRecord).where(LiveRecord.model_name == MODEL)
                )
                or 0
            )
        if count != last:
            last, steady = count, time.monotonic()
        if count >= answered or time.monotonic() - steady > 5 or time.monotonic() > deadline:
            return {"monitoring_recorded": count, "monitoring_answered": answered}
        time.sleep(0.5)


def _config(port: int, backend: str, args: argparse.Namespace, triton_url: str = "") -> Any:
    from serving.config import ServeConfig

    model: dict[str, Any] = {
        "name": MODEL,
        "backend": backend,
        "num_cpus": args.threads,
        "max_batch_size": args.max_batch or args.concurrency,
        "batch_wait_timeout_s": 0.005,
    }
    if triton_url:
        model.update(triton_url=triton_url, num_cpus=0, triton_repository=str(args.triton_repository))
    return ServeConfig.model_validate(
        {"port": port, "ingress_num_cpus": 0, "direct_ingress": not args.proxy, "models": [model]}
    )


def _deploy(port: int, backend: str, args: argparse.Namespace, triton_url: str = "") -> None:
    from serving.app import run

    run(_config(port, backend, args, triton_url))


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--network", default="densenet121", help="tiny, resnet18, densenet121, ...")
    parser.add_argument("--size", type=int, default=224, help="model input size (square)")
    parser.add_argument("--rounds", type=int, default=7, help="bracketed measurements per backend")
    parser.add_argument(
        "--requests", type=int, default=16, help="sequential requests per round (twice as many concurrent)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--max-batch", type=int, default=0, help="served max_batch_size (default: --concurrency)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (replica CPUs; 1 on a shared 2-core box)"
    )
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton backend")
    parser.add_argument(
        "--no-trivial", action="store_true", help="skip Ray Serve's own overhead (trivial model)"
    )
    parser.add_argument("--trivial-requests", type=int, default=200, help="requests per path and round")
    parser.add_argument(
        "--soak", type=float, default=0, help="load test seconds (300 for the soak figure) after in-process"
    )
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument(
        "--no-monitoring",
        action="store_true",
        help="no reference profile, so no live monitoring recorder in the replica (production has one)",
    )
    parser.add_argument(
        "--proxy", action="store_true", help="behind Ray Serve's HTTP proxy actor (no direct ingress)"
    )
    args = parser.parse_args()
    # The raw baseline gets the same thread budget as a Ray replica (Ray sets OMP_NUM_THREADS).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    home = Path(tempfile.mkdtemp(prefix="radgate-bench-serve-"))
    os.environ["RADGATE_HOME"] = str(home)
    os.environ.setdefault("RADGATE_PROJECT_KEY", os.urandom(32).hex())
    for var in ("RADGATE_MLFLOW_TRACKING_URI", "RADGATE_CATALOG_URL"):
        os.environ.pop(var, None)

    import ray
    from ray import serve

    from governance.testing import create_cast
    from imaging.demo_data import write_demo_studies
    from serving.testing import approve_and_promote, register_model

    cast = create_cast()
    version = register_model(MODEL, network=args.network, spatial_size=(args.size, args.size))
    approve_and_promote(MODEL, version, cast)
    files = write_demo_studies(home / "demo", patients=8, images_per_patient=1, size=256, seed=1).files
    bodies = [p.read_bytes() for p in files]
    token = cast.tokens["pacs"]

    import torch

    from training.registry import load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(f"{MODEL}@production")
    if not args.no_monitoring:  # as training does: the replica then records every request
        from training.preprocess import IMAGE_KEY
        from training.reference_profile import compute_reference_profile, log_reference_profile

        rows = [{IMAGE_KEY: str(p)} for p in files]
        profile = compute_reference_profile(
            loaded.module, rows, loaded.preprocessing, label_names=loaded.label_names
        )
        log_reference_profile(str(loaded.run_id), profile)

    from serving.model import InProcessForward

    forward = InProcessForward(loaded)  # what the in-process replica builds from the same version
    from serving.app import start_ray
    from serving.net import free_port

    port = free_port()
    # As `radgate serve` starts it: the ingress replica answers HTTP on the port (direct ingress).
    start_ray(
        _config(port, "inprocess", args),
        num_cpus=args.threads,
        temp_dir=f"/tmp/rg-bench-{os.getpid()}",
    )
    url = f"http://127.0.0.1:{port}"
    # Per backend, one (raw, served) pair per round.
    rounds: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}

    def measure(backend: str, triton_url: str = "") -> None:
        def split(before: dict[str, int] | None = None) -> Any:
            """Triton's statistics around the sequential requests: where their time goes."""
            now = _triton_stats(triton_url)
            return now if before is None else _triton_split(before, now)

        for index in range(args.rounds):
            raw, served = _bracketed(
                loaded,
                forward,
                bodies,
                args,
                lambda first=index == 0: asyncio.run(
                    _measure(
                        url,
                        token,
                        bodies,
                        args.requests,
                        args.concurrency,
                        cpu=first,
                        sequential=split if triton_url else None,
                    )
                ),
            )
            rounds.setdefault(backend, []).append((raw, served))
            print(
                f"{backend} round {index + 1}: raw {json.dumps({k: round(v, 2) for k, v in raw.items()})} "
                f"served {json.dumps({k: round(v, 2) for k, v in served.items()})}",
                file=sys.stderr,
            )

    triton_server = None
    monitoring: dict[str, int] = {}
    soak: dict[str, float] = {}
    trivial: dict[str, Any] = {}
    try:
        _deploy(port, "inprocess", args)
        measure("inprocess")
        if args.soak > 0:
            soak = asyncio.run(_soak(url, token, bodies, args.soak, args.soak_concurrency))
            print(f"soak: {json.dumps(soak)}", file=sys.stderr)
        if not args.no_triton:
            from serving.triton import TritonNotInstalled, TritonServer
            from serving.triton.publish import publish

            try:
                args.triton_repository = home / "triton-repo"
                publish(f"{MODEL}@production", args.triton_repository, actor="bench", role="ml-engineer",
                        threads=args.threads)  # fmt: skip
                triton_server = TritonServer(home / "triton-repo", home / "triton-work").start()
            except TritonNotInstalled as exc:
                print(f"triton skipped: {exc}", file=sys.stderr)
            if triton_server is not None:
                serve.delete("radgate")
                _deploy(port, "triton", args, triton_server.grpc_url)
                measure("triton", triton_server.grpc_url)
        if not args.no_trivial:
            serve.delete("radgate")  # the trivial app takes the direct-ingress port
            trivial = ray_serve_overhead(port, args.rounds, args.trivial_requests)
            print(f"trivial model: {json.dumps(trivial)}", file=sys.stderr)
        answered = sum(int(served["answered"]) for runs in rounds.values() for _, served in runs)
        answered += int(soak.get("requests", 0) - soak.get("errors", 0))
        monitoring = {} if args.no_monitoring else _monitoring_records(answered)
    finally:
        serve.shutdown()
        ray.shutdown()
        if triton_server is not None:
            triton_server.stop()

    def median(backend: str, side: int, key: str) -> float:
        return float(spread([r[side][key] for r in rounds[backend]])["median"])

    def ratios(backend: str, key: str) -> dict[str, float | int]:
        """The served / raw ratio of ``key`` in each round (each round against its own raw)."""
        return spread([served[key] / raw[key] for raw, served in rounds[backend]], 3)

    headline = ratios("inprocess", "p50_ms")
    line: dict[str, Any] = {
        "bench": "serve",
        "value": headline["median"],
        "target": P50_TARGET["inprocess"],
        "better": "lower",
        "unit": "p50 latency ratio (Ray Serve in-process / raw decode+preprocess+forward, batch 1), "
        f"median of {args.rounds} rounds",
        "network": args.network,
        "size": args.size,
        "threads": args.threads,
        "rounds": args.rounds,
        "requests_per_round": args.requests,
        "http": "proxy" if args.proxy else "direct ingress",
        "max_batch_size": args.max_batch or args.concurrency,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    # Figures in ms and images/s are medians over the rounds; ratios are per round, then median
    # (the value) and spread (``*_spread``: min, max, IQR, n).
    for backend in rounds:
        for key in ("p50_ms", "p95_ms", "forward_ms", "throughput"):
            line[f"{backend}_raw_{key}"] = round(median(backend, 0, key), 2)
        for key in (
            "p50_ms",
            "p95_ms",
            "replica_ms",
            "replica_forward_ms",
            "ingress_ms",
            "audit_ms",
            "throughput",
        ):
            line[f"{backend}_{key}"] = round(median(backend, 1, key), 2)
        line[f"{backend}_errors"] = int(sum(r[1]["errors"] for r in rounds[backend]))
        if "triton_server_ms" in rounds[backend][0][1]:
            # Triton's own time per sequential (batch-1) request (its statistics: means over the
            # round's sequential requests): queue, the model's execution and the copies in and out
            # of the backend stub; the rest of replica_forward_ms is the client and the gRPC hop.
            for key in ("triton_server_ms", "triton_queue_ms", "triton_b1_input_ms", "triton_b1_infer_ms",
                        "triton_b1_output_ms"):  # fmt: skip
                line[f"{backend}_{key.removeprefix('triton_')}"] = round(median(backend, 1, key), 3)
        for key, name in (
            ("p50_ms", "p50_ratio"),
            ("p95_ms", "p95_ratio"),
            ("throughput", "throughput_ratio"),
        ):
            figures = ratios(backend, key)
            line[f"{backend}_{name}"] = figures["median"]
            line[f"{backend}_{name}_spread"] = figures
    line["p50_targets"] = P50_TARGET
    line["throughput_target"] = THROUGHPUT_TARGET
    if trivial:
        line["ray_serve_trivial"] = trivial
    line.update(monitoring)
    if args.soak > 0:
        line.update({f"soak_{k}": v for k, v in soak.items()}, soak_seconds=args.soak)
    checks = {f"{backend}_errors == 0": not line[f"{backend}_errors"] for backend in rounds}
    if monitoring:  # live monitoring, off the request path, still recorded every answered request
        checks["monitoring_recorded == monitoring_answered"] = (
            monitoring["monitoring_recorded"] == monitoring["monitoring_answered"]
        )
    for backend in rounds:
        if backend != "inprocess":
            checks[f"{backend}_p50_ratio <= {P50_TARGET[backend]}"] = (
                line[f"{backend}_p50_ratio"] <= P50_TARGET[backend]
            )
        checks[f"{backend}_throughput_ratio >= {THROUGHPUT_TARGET}"] = (
            line[f"{backend}_throughput_ratio"] >= THROUGHPUT_TARGET
        )
    return finish(line, no_fail=args.no_fail, checks=checks)


if __name__ == "__main__":
    sys.exit(main())
