#!/usr/bin/env python3
"""Benchmark: distributed intake on two Ray nodes of one CPU each against one machine's intake
with two worker processes, on the same files, in the same run.

A Ray head (``--num-cpus 1``) and a second node (``--num-cpus 1``, its own temp dir) are started
on 127.0.0.1; each round ingests the same corpus twice into fresh catalogs and stores (SQLite +
local store, as the embedded default): ``run_files(workers=2)`` (the single-node path: one
process pool of two) and ``ingest_on_cluster`` (tasks spread over both nodes). One warm-up round
of each is not counted (worker start-up and imports). Figures per round: files/s of each and
their ratio; the JSON line gives the median ratio with its spread.

    python scripts/bench/ingest_ray.py [--files 400] [--size 256] [--rounds 7] [--components] [--no-fail]

``--components`` also measures, for docs/CAPACITY.md, what a cluster's shared services must
absorb: catalog commits on PostgreSQL 15 (instances/s through the tasks' own commit: advisory
locks, re-check, instance + lineage + pseudonym rows, chunks of 32) and object writes to an S3
server (moto on this machine: a lower bound for a real object store), and the per-CPU files/s of
a task against PostgreSQL + S3.

Target: cluster files/s / single-node files/s >= 0.9 (the cluster costs little), and the same
for files per CPU-second (``cpu_efficiency_ratio``: the bench's own CPU and its pool's against the
driver's plus every process of both Ray nodes): on a machine whose other jobs make the wall clock
wait (the single-node runner waits on ``os.sync``), this one says what the cluster itself costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_no_fail, finish, spread  # noqa: E402

TARGET = 0.9
KEY = "5a" * 32


def _script(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _corpus(folder: Path, files: int, size: int) -> tuple[list[Path], int]:
    from imaging.demo_data import write_demo_studies

    per_patient = 4
    demo = write_demo_studies(
        folder, patients=max(1, files // per_patient), images_per_patient=per_patient, size=size
    )
    demo.labels_csv.unlink()  # DICOM only: both paths see the same inputs
    return demo.files, sum(p.stat().st_size for p in demo.files)


def _tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system, with reaped children) of the processes under ``roots``: the
    Ray cluster (both ``ray start`` process trees: GCS, raylets, workers)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    total = 0.0
    for pid, cpu in times.items():
        walk = pid
        while walk > 1 and walk not in roots:
            walk = parents.get(walk, 0)
        if walk in roots:
            total += cpu
    return total


def _own_cpu_s() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _single(files: list[Path], home: Path) -> float:
    from governance.settings import Settings
    from imaging.ingest import Sink, run_files

    settings = Settings(home=home)
    start = time.perf_counter()
    report = run_files(files, sink=Sink.STORE, workers=2, settings=settings)
    elapsed = time.perf_counter() - start
    assert report.inputs == report.deidentified == len(files), report.as_dict()
    return elapsed


def _cluster(folder: Path, count: int, home: Path) -> tuple[float, int]:
    from governance.settings import Settings
    from imaging.ingest.distributed import ingest_on_cluster

    settings = Settings(home=home)
    start = time.perf_counter()
    report = ingest_on_cluster(str(folder), settings=settings, chunk_size=16)
    elapsed = time.perf_counter() - start
    if not report.inputs == report.deidentified == count:
        from sqlalchemy import text

        from governance.catalog import open_catalog

        with open_catalog(settings).engine.connect() as connection:
            details = (
                connection.execute(text("SELECT DISTINCT detail FROM quarantine LIMIT 5")).scalars().all()
            )
        raise AssertionError(f"{report.as_dict()} {details}")
    return elapsed, len(report.files_per_node)


def _components(work: Path, files: list[Path]) -> dict[str, object]:
    """Catalog commits/s on PostgreSQL, object bytes/s on S3 (moto), and one task's files/s
    with both (see the module docstring)."""
    import dataclasses
    import secrets

    from governance.catalog import open_catalog
    from governance.keys import load_project_key
    from governance.settings import Settings
    from imaging.deid import load_profile
    from imaging.ingest.tasks import ChunkReport, JobSpec, _Worker
    from imaging.store import ContentStore

    pg_ci = _script("scripts/ci/postgres.py", "radgate_ci_postgres")
    s3_ci = _script("scripts/ci/s3.py", "radgate_ci_s3")
    pg_dir = pg_ci.scratch_dir()
    postgres = pg_ci.PostgresCluster(pg_dir)
    s3 = s3_ci.S3Server(work / "s3")
    try:
        postgres.start()
        s3.start()
        s3.create_bucket("bench")
        os.environ.update(s3.env())
        settings = Settings(
            home=work / "components",
            catalog_url=postgres.create_database("bench"),
            object_store="s3://bench/store",
        )
        open_catalog(settings)
        key = load_project_key(settings)
        spec = JobSpec(
            job_id="benchcomponents0", profile=load_profile(None), key_id=key.key_id, sealer=key.sealer,
            catalog_url=settings.resolved_catalog_url, store_root=settings.resolved_object_store,
            quarantine_root="s3://bench/quarantine",
        )  # fmt: skip
        worker = _Worker(spec)
        sample = files[: min(len(files), 96)]
        # Commits alone: results of the first 32 inputs, committed again and again under new
        # input and output hashes (made before anything is recorded, so none is a duplicate).
        template = [
            r for r in (worker.process(str(p), "bench:x", ChunkReport(), {}) for p in sample[:32]) if r
        ]
        start = time.perf_counter()
        report = worker.run([(str(path), f"{i:016x}") for i, path in enumerate(sample)])
        task_s = time.perf_counter() - start
        assert report.deidentified == len(sample), report
        commits: list[float] = []
        for round_ in range(20):
            batch = [
                dataclasses.replace(
                    r,
                    input_sha256=secrets.token_hex(32),
                    output_sha256=secrets.token_hex(32),
                    source=spec.source_of(f"{round_:04x}{i:012x}"),
                )
                for i, r in enumerate(template)
            ]
            start = time.perf_counter()
            worker.commit(batch, ChunkReport())
            commits.append(len(batch) / (time.perf_counter() - start))
        store = ContentStore("s3://bench/objects")
        blobs = [secrets.token_bytes(sum(p.stat().st_size for p in sample) // len(sample)) for _ in range(40)]
        start = time.perf_counter()
        for blob in blobs:
            store.put(blob)
        put_s = time.perf_counter() - start
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
    return {
        "task_files_per_s_pg_s3": round(len(sample) / task_s, 1),
        "catalog_instances_per_s_pg": spread(commits, 1),
        "store_puts_per_s_moto": round(len(blobs) / put_s, 1),
        "store_bytes_per_s_moto": round(sum(map(len, blobs)) / put_s),
    }


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="image rows and columns")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--components", action="store_true", help="also PostgreSQL and S3 figures")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rg-bench-ray-"))
    os.environ.update(RADGATE_HOME=str(work / "home"), RADGATE_PROJECT_KEY=KEY, RAY_AUTH_MODE="disabled")
    # One thread per worker on both sides, as Ray sets it for its one-CPU workers.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("RADGATE_CATALOG_URL", None)
    os.environ.pop("RADGATE_OBJECT_STORE", None)
    head_ci = _script("scripts/ci/ray_head.py", "radgate_ci_ray_head")
    worker_ci = _script("scripts/ci/ray_worker.py", "radgate_ci_ray_worker")
    files, size_bytes = _corpus(work / "corpus", args.files, args.size)
    components = _components(work, files) if args.components else None
    head = head_ci.RayHead(num_cpus=1)
    worker = None
    import ray

    single: list[float] = []
    cluster: list[float] = []
    ratios: list[float] = []
    cpu_ratios: list[float] = []  # files per CPU-second, cluster / single (the cluster's own cost)
    per_cpu_s: dict[str, list[float]] = {"single": [], "cluster": []}  # files per CPU-second
    nodes_used: set[int] = set()
    try:
        head.start()
        worker = worker_ci.RayWorker(head.address, num_cpus=1).start()
        ray.init(address=head.address, log_to_driver=False)
        for round_ in range(args.rounds + 1):  # round 0 warms both paths up
            roots = [head.process.pid, worker.process.pid]
            cpu = _own_cpu_s()
            one = _single(files, work / f"single-{round_}")  # its pool is reaped: RUSAGE_CHILDREN
            one_cpu = _own_cpu_s() - cpu
            cpu, tree = _own_cpu_s(), _tree_cpu_s(roots)
            two, nodes = _cluster(work / "corpus", len(files), work / f"cluster-{round_}")
            two_cpu = _own_cpu_s() - cpu + _tree_cpu_s(roots) - tree
            shutil.rmtree(work / f"single-{round_}", ignore_errors=True)
            shutil.rmtree(work / f"cluster-{round_}", ignore_errors=True)
            label = "warm-up" if round_ == 0 else f"round {round_}"
            print(
                f"{label}: one machine, 2 workers {len(files) / one:.1f} files/s; "
                f"2 nodes x 1 CPU {len(files) / two:.1f} files/s ({nodes} nodes); ratio {one / two:.3f}; "
                f"CPU seconds {one_cpu:.1f} vs {two_cpu:.1f}",
                file=sys.stderr,
            )
            if round_:
                single.append(len(files) / one)
                cluster.append(len(files) / two)
                ratios.append(one / two)
                cpu_ratios.append(one_cpu / two_cpu)
                per_cpu_s["single"].append(len(files) / one_cpu)
                per_cpu_s["cluster"].append(len(files) / two_cpu)
                nodes_used.add(nodes)
    finally:
        ray.shutdown()
        if worker is not None:
            worker.stop()
        head.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratio, cpu_efficiency = spread(ratios, 3), spread(cpu_ratios, 3)
    result = {
        "bench": "ingest_ray",
        "value": ratio["median"],
        "target": TARGET,
        "better": "higher",
        "ratio": ratio,
        "cpu_efficiency_ratio": cpu_efficiency,
        "cluster_files_per_s": spread(cluster, 1),
        "single_files_per_s": spread(single, 1),
        "cluster_files_per_cpu_s": spread(per_cpu_s["cluster"], 1),
        "single_files_per_cpu_s": spread(per_cpu_s["single"], 1),
        "cluster_bytes_per_cpu_s": round(spread(per_cpu_s["cluster"], 1)["median"] * size_bytes / len(files)),
        "files": len(files),
        "bytes": size_bytes,
        "image_size": args.size,
        "nodes": sorted(nodes_used),
        "setup": "head --num-cpus 1 + node --num-cpus 1 vs run_files(workers=2); SQLite + local store",
    }
    if components is not None:
        result["components"] = components
    checks = {
        "both nodes used": nodes_used == {2},
        f"cpu_efficiency_ratio >= {TARGET}": cpu_efficiency["median"] >= TARGET,
    }
    return finish(result, no_fail=args.no_fail, checks=checks)


if __name__ == "__main__":
    sys.exit(main())
