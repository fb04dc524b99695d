#!/usr/bin/env python3
"""Benchmark: distributed intake on two Ray nodes of one CPU each against one machine's intake
with two worker processes, on the same files, in the same run.

A Ray head (``--num-cpus 1``) and a second node (``--num-cpus 1``, its own temp dir) are started
on 127.0.0.1; each round ingests the same corpus twice into fresh catalogs and stores (SQLite +
local store, as the embedded default): ``run_files(workers=2)`` (the single-node path: one
process pool of two) and ``ingest_on_cluster`` (tasks spread over both nodes). One warm-up round
of each is not counted (worker start-up and imports). Figures per round: files/s of each and
their ratio; the JSON line gives the median ratio with its spread.

    python scripts/bench/ingest_ray.py [--files 400] [--size 256] [--rounds 7] [--no-fail]

Target: cluster files/s / single-node files/s >= 0.9 (the cluster costs little).
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
            details = connection.execute(text("SELECT DISTINCT detail FROM quarantine LIMIT 5")).scalars().all()
        raise AssertionError(f"{report.as_dict()} {details}")
    return elapsed, len(report.files_per_node)


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="image rows and columns")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rg-bench-ray-"))
    os.environ.update(RADGATE_HOME=str(work / "home"), RADGATE_PROJECT_KEY=KEY, RAY_AUTH_MODE="disabled")
    os.environ.pop("RADGATE_CATALOG_URL", None)
    os.environ.pop("RADGATE_OBJECT_STORE", None)
    head_ci = _script("scripts/ci/ray_head.py", "radgate_ci_ray_head")
    worker_ci = _script("scripts/ci/ray_worker.py", "radgate_ci_ray_worker")
    files, size_bytes = _corpus(work / "corpus", args.files, args.size)
    head = head_ci.RayHead(num_cpus=1)
    worker = None
    import ray

    single: list[float] = []
    cluster: list[float] = []
    ratios: list[float] = []
    nodes_used: set[int] = set()
    try:
        head.start()
        worker = worker_ci.RayWorker(head.address, num_cpus=1).start()
        ray.init(address=head.address, log_to_driver=False)
        for round_ in range(args.rounds + 1):  # round 0 warms both paths up
            one = _single(files, work / f"single-{round_}")
            two, nodes = _cluster(work / "corpus", len(files), work / f"cluster-{round_}")
            shutil.rmtree(work / f"single-{round_}", ignore_errors=True)
            shutil.rmtree(work / f"cluster-{round_}", ignore_errors=True)
            label = "warm-up" if round_ == 0 else f"round {round_}"
            print(
                f"{label}: one machine, 2 workers {len(files) / one:.1f} files/s; "
                f"2 nodes x 1 CPU {len(files) / two:.1f} files/s ({nodes} nodes); ratio {one / two:.3f}",
                file=sys.stderr,
            )
            if round_:
                single.append(len(files) / one)
                cluster.append(len(files) / two)
                ratios.append(one / two)
                nodes_used.add(nodes)
    finally:
        ray.shutdown()
        if worker is not None:
            worker.stop()
        head.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratio = spread(ratios, 3)
    result = {
        "bench": "ingest_ray",
        "value": ratio["median"],
        "target": TARGET,
        "better": "higher",
        "ratio": ratio,
        "cluster_files_per_s": spread(cluster, 1),
        "single_files_per_s": spread(single, 1),
        "cluster_bytes_per_s_per_cpu": round(spread(cluster, 1)["median"] * size_bytes / len(files) / 2),
        "files": len(files),
        "bytes": size_bytes,
        "image_size": args.size,
        "nodes": sorted(nodes_used),
        "setup": "head --num-cpus 1 + node --num-cpus 1 vs run_files(workers=2); SQLite + local store",
    }
    return finish(result, no_fail=args.no_fail, checks={"both nodes used": nodes_used == {2}})


if __name__ == "__main__":
    sys.exit(main())
