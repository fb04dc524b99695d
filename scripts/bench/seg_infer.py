"""Benchmark: sliding-window segmentation of one volume through ``segment_volume`` vs raw MONAI.

A MONAI 3D UNet (the training factory's default levels, 3 structures + background) segments
a synthetic MR-like volume. ``segment_volume`` does everything serving does per series
(resample to the spec spacing, normalise, ``sliding_window_inference``, logits back to the
source grid, argmax, volumes); the baseline is a bare ``monai.inferers.sliding_window_inference``
call with the same window, overlap and blending on the already prepared network input. Both
are timed interleaved (baseline, ours, baseline, ours...) in one process so they see the same
load; the value is the ratio of medians. Target: at most 1.2x. Prints one JSON line (median and
spread) last and exits 1 on a miss (``--no-fail`` to explore).

    .venv/bin/python scripts/bench/seg_infer.py [--repeats 7] [--threads 2] [--slices 48 --size 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from _common import add_no_fail, finish, spread


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--repeats", type=int, default=7, help="Timed runs of each path.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--slices", type=int, default=48, help="Slices of the source volume (3 mm).")
    parser.add_argument("--size", type=int, default=128, help="Rows and columns (1.5 mm pixels).")
    parser.add_argument("--roi", type=int, nargs=3, default=(32, 64, 64), help="Window (z y x).")
    args = parser.parse_args()

    from monai.inferers import sliding_window_inference

    from imaging.volumes import Volume
    from training.segmentation.inference import DEFAULT_SW_BATCH_SIZE, prepare_volume, segment_volume
    from training.segmentation.networks import build_segmentation_network
    from training.segmentation.spec import SegmentationSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = SegmentationSpec(
        labels={1: "Thalamus", 2: "Putamen", 3: "Hippocampus"},
        spacing=(3.0, 2.0, 2.0),
        roi_size=tuple(args.roi),
    )
    net = build_segmentation_network(spec.network, num_classes=spec.num_classes).eval()
    rng = np.random.default_rng(0)
    array = rng.normal(300, 40, (args.slices, args.size, args.size)).astype(np.float32)
    volume = Volume(
        array=array, spacing=(3.0, 1.5, 1.5), origin=(0.0, 0.0, 0.0), orientation=(1, 0, 0, 0, 1, 0)
    )
    prepared = prepare_volume(volume.array, volume.spacing, spec)

    def raw() -> None:
        with torch.inference_mode():
            sliding_window_inference(
                prepared,
                roi_size=spec.roi_size,
                sw_batch_size=DEFAULT_SW_BATCH_SIZE,
                predictor=net,
                overlap=spec.overlap,
                mode="gaussian",
            )

    def ours() -> None:
        segment_volume(net, volume, spec)

    raw()  # warm-up (allocator, MONAI imports)
    ours()
    raw_s: list[float] = []
    ours_s: list[float] = []
    for _ in range(args.repeats):
        raw_s.append(_seconds(raw))
        ours_s.append(_seconds(ours))
    baseline, value = statistics.median(raw_s), statistics.median(ours_s)
    last = segment_volume(net, volume, spec)
    return finish(
        {
            "bench": "seg_infer",
            "value": round(value / baseline, 3),
            "target": 1.2,
            "better": "lower",
            "segment_volume_s": round(value, 3),
            "raw_sliding_window_s": round(baseline, 3),
            "segment_volume_s_spread": spread(ours_s, 3),
            "raw_sliding_window_s_spread": spread(raw_s, 3),
            "steps_ms": last.timings_ms,
            "source_shape": list(array.shape),
            "model_grid": list(last.model_grid),
            "roi_size": list(spec.roi_size),
            "network": spec.network,
            "threads": args.threads,
            "repeats": args.repeats,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        no_fail=args.no_fail,
    )


if __name__ == "__main__":
    sys.exit(main())
