"""Benchmark: time per image of each explanation method divided by the model's forward time.

A network of the one table (default DenseNet121, MONAI, 2D, 1 channel, 2 classes) at 224x224,
batch 1, CPU, measured in one run.
Forward and each method are timed interleaved (forward, method, forward, method...) so that
both see the same machine load; the ratio is of medians. Target: the family's overlay method
(what reviewers see on every result: Grad-CAM, or HiResCAM for resnet10-lite) at most 1.5x a
forward pass. MONAI's own GradCAM is timed as a reference. Prints one JSON line last (median and
spread) and exits 1 when the overlay method misses its target (``--no-fail`` to explore).

    .venv/bin/python scripts/bench/explain.py [--repeats 15] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from collections.abc import Callable

import torch
from _common import add_no_fail, finish, spread

from training.explain import ExplainConfig, Explainer, ExplainMethod
from training.explain.layers import overlay_method
from training.networks import NetworkFamily, build_network, gradcam_layer


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> int:
    parser = add_no_fail(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--repeats", type=int, default=15, help="Timed runs of forward and Grad-CAM.")
    parser.add_argument("--slow-repeats", type=int, default=2, help="Timed runs of IG and Occlusion.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: one core).")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--quick", action="store_true", help="Skip Integrated Gradients and Occlusion.")
    parser.add_argument(
        "--network", default=NetworkFamily.DENSENET121.value, choices=[f.value for f in NetworkFamily],
        help="A family of the one network table (training.networks.NETWORKS).",
    )  # fmt: skip
    args = parser.parse_args()

    from monai.visualize import GradCAM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_network(args.network, num_classes=2).eval()
    image = torch.rand(1, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    config = ExplainConfig()  # defaults: IG 32 steps, occlusion window 1/8, stride 1/16
    explainer = Explainer(model, config=config)
    # MONAI's GradCAM leaves hooks on the module it wraps: give it its own copy.
    # The target layer training, explanation and serving use: the one table's, not a copy of it.
    monai_cam = GradCAM(nn_module=copy.deepcopy(model), target_layers=gradcam_layer(args.network))

    def forward() -> None:
        with torch.no_grad():
            model(image)

    calls: dict[str, Callable[[], object]] = {
        method.value: functools.partial(explainer.explain, image, method) for method in ExplainMethod
    }
    calls["monai_gradcam"] = lambda: monai_cam(x=image)
    slow = {ExplainMethod.INTEGRATED_GRADIENTS.value, ExplainMethod.OCCLUSION.value}
    if args.quick:
        for name in slow:
            calls.pop(name)
    for call in (forward, *calls.values()):  # warm-up (first-call allocations, layer lookup)
        call()

    forward_times: dict[str, list[float]] = {}
    method_times: dict[str, list[float]] = {}
    for name, call in calls.items():
        repeats = args.slow_repeats if name in slow else args.repeats
        forward_times[name], method_times[name] = [], []
        for _ in range(repeats):
            forward_times[name].append(_seconds(forward))
            method_times[name].append(_seconds(call))

    forward_ms = {name: 1000 * statistics.median(values) for name, values in forward_times.items()}
    method_ms = {name: 1000 * statistics.median(values) for name, values in method_times.items()}
    ratios = {name: method_ms[name] / forward_ms[name] for name in calls}
    overlay = overlay_method(model)
    for name in calls:
        print(
            f"{name:>14}: {method_ms[name]:9.1f} ms  "
            f"forward {forward_ms[name]:6.1f} ms  ratio {ratios[name]:7.2f}"
        )
    return finish(
        {
            "bench": "explain",
            "value": round(ratios[overlay], 3),
            "target": 1.5,
            "better": "lower",
            "metric": f"{overlay}_ms / forward_ms (median, per image; the family's overlay method)",
            "model": f"{args.network} 2D 1->2 (gradcam layer {gradcam_layer(args.network)})",
            "size": args.size,
            "threads": args.threads,
            "forward_ms": round(forward_ms[overlay], 2),
            "overlay_ms_spread": spread([1000 * t for t in method_times[overlay]], 2),
            "forward_ms_spread": spread([1000 * t for t in forward_times[overlay]], 2),
            "ms": {k: round(v, 2) for k, v in method_ms.items()},
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "ig_steps": config.ig_steps,
            "occlusion_window_fraction": config.occlusion_window_fraction,
            "occlusion_stride_fraction": config.occlusion_stride_fraction,
        },
        no_fail=args.no_fail,
    )


if __name__ == "__main__":
    sys.exit(main())
