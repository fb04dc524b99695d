#!/usr/bin/env python3
"""Benchmark: batch inference over a cohort (serving.batch.BatchPredictor, the body of each Ray
Data actor) against the raw work in the same run: store read + preprocess + batched forward of
the same approved model on the same instances.

The batch path adds, per batch, the gate's fresh decision (registry, policy, audit chain) and,
per instance, the service's result JSON and its DICOM Structured Report. One thread, one CPU
(what one Ray Data actor gets). Figures: images per CPU-second and per second of each, for
docs/CAPACITY.md (inference per CPU core); the JSON line gives batch / raw images per CPU-second.

    python scripts/bench/batch_infer.py [--network densenet121] [--size 224] [--images 64] [--rounds 5]

Target: batch path >= 0.8x the raw work (the gate per batch and the results cost little).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_no_fail, finish, spread  # noqa: E402

TARGET = 0.8


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--network", default="densenet121", help="tiny, or a training network family")
    parser.add_argument("--size", type=int, default=224, help="model input rows and columns")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rg-bench-batch-"))
    os.environ.update(RADGATE_HOME=str(work / "home"), RADGATE_PROJECT_KEY="6b" * 32, OMP_NUM_THREADS="1")
    for name in ("RADGATE_CATALOG_URL", "RADGATE_OBJECT_STORE", "RADGATE_MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    import numpy as np
    import torch

    from governance.testing import create_cast
    from imaging.datasets import create_dataset
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Sink, run_files
    from imaging.store import ContentStore
    from serving.batch import BatchJob, BatchPredictor
    from serving.model import softmax
    from serving.testing import approve_and_promote, register_model

    torch.set_num_threads(1)
    try:
        cast = create_cast()
        version = register_model("bench-batch", network=args.network, spatial_size=(args.size, args.size))
        approve_and_promote("bench-batch", version, cast)
        demo = write_demo_studies(
            work / "demo", patients=max(1, args.images // 2), images_per_patient=2, size=256
        )
        run_files(demo.files, sink=Sink.STORE, workers=1)
        items = create_dataset(
            "bench", demo.labels_csv, label_names=["no_finding", "opacity"]
        ).version.manifest.items
        store = ContentStore.from_settings()
        batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]

        def columns(chunk: list) -> dict[str, np.ndarray]:
            return {
                "sha256": np.array([i.sha256 for i in chunk], dtype=object),
                "store_key": np.array([i.store_key for i in chunk], dtype=object),
            }

        batch_rates: list[float] = []
        raw_rates: list[float] = []
        wall: dict[str, list[float]] = {"batch": [], "raw": []}
        for round_ in range(args.rounds + 1):  # round 0: model load, trace, first decisions
            output = work / f"out-{round_}"
            job = BatchJob(
                model="bench-batch", alias="production", version=None, output=str(output),
                store_root=store.root, dataset_id="bench", threads=1,
            )  # fmt: skip
            actor = BatchPredictor(job)
            actor(columns(batches[0][:1]))  # loads the model (not timed)
            shutil.rmtree(output, ignore_errors=True)
            predictor = actor.predictor
            assert predictor is not None
            cpu, start = time.process_time(), time.perf_counter()
            for chunk in batches:
                out = actor(columns(chunk))
                assert set(out["status"]) == {"predicted"}, set(out["status"])
            batch_cpu, batch_wall = time.process_time() - cpu, time.perf_counter() - start
            cpu, start = time.process_time(), time.perf_counter()
            for chunk in batches:
                tensors = [predictor.preprocess(store.get(i.store_key)).astype(np.float32) for i in chunk]
                softmax(predictor.forward(np.stack(tensors)))
            raw_cpu, raw_wall = time.process_time() - cpu, time.perf_counter() - start
            if round_:
                batch_rates.append(len(items) / batch_cpu)
                raw_rates.append(len(items) / raw_cpu)
                wall["batch"].append(len(items) / batch_wall)
                wall["raw"].append(len(items) / raw_wall)
            print(
                f"round {round_}: batch {len(items) / batch_cpu:.1f} images per CPU-second, "
                f"raw {len(items) / raw_cpu:.1f}",
                file=sys.stderr,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [b / r for b, r in zip(batch_rates, raw_rates, strict=True)]
    result = {
        "bench": "batch_infer",
        "value": spread(ratios, 3)["median"],
        "target": TARGET,
        "better": "higher",
        "ratio": spread(ratios, 3),
        "batch_images_per_cpu_s": spread(batch_rates, 2),
        "raw_images_per_cpu_s": spread(raw_rates, 2),
        "batch_images_per_s": spread(wall["batch"], 2),
        "raw_images_per_s": spread(wall["raw"], 2),
        "network": args.network,
        "input": f"{args.size}x{args.size}",
        "images": len(items),
        "batch_size": args.batch,
        "threads": 1,
    }
    return finish(result, no_fail=args.no_fail)


if __name__ == "__main__":
    sys.exit(main())
