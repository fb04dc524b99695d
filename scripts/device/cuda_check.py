#!/usr/bin/env python3
"""CUDA check of training, explanation and serving code paths (run on a machine with a GPU).

What CI cannot check on its CPU-only runners: that RadGate's own code runs on a GPU when one is
there, and gives what it gives on the CPU. Each part uses the project's code, not a re-write:

- **train**: ``training.module.ClassifierModule`` (a MONAI DenseNet121) under a Lightning
  ``Trainer(accelerator="gpu")`` as ``training.launch`` builds it, a few epochs on synthetic
  images with a learnable signal; loss must fall and validation AUROC must rise above chance.
- **serve**: ``serving.worker.ModelWorker._forward_for`` with ``num_gpus: 1`` (moves the module
  to the GPU) and the resulting ``serving.model.InProcessForward`` (TorchScript trace with the
  monitoring embedding): logits and embeddings against the CPU forward of the same weights;
  p50 at batch 1 and throughput at batch 8 against a raw eager CUDA forward of the same module.
- **explain**: ``training.explain.Explainer`` (Captum Grad-CAM, Integrated Gradients, Occlusion)
  on the GPU module against the CPU module: the maps must correlate.
- **segment**: ``training.segmentation.inference.segment_volume`` (MONAI sliding window) with a
  UNet on the GPU against the CPU: the label maps must agree.
- **train_segmentation**: ``training.segmentation.module.SegmentationModule`` (3D UNet, DiceCE on
  patches, sliding-window validation per structure) under a Lightning GPU trainer on synthetic
  volumes with two bright blobs; validation Dice must rise.

    python scripts/device/cuda_check.py [--device cuda] [--out FILE.json]

Prints one JSON line (``{"check": "cuda", "ok": true, ...}``); exit status 1 when a part fails.
On a machine without CUDA, ``--device cpu`` runs the same code paths against themselves (a dry
run of the script).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _synthetic(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose label is a bright disc in the upper half (learnable in a few epochs)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.3, 0.1, (n, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(labels):
        cy, cx = rng.integers(size // 8, size // 2), rng.integers(size // 4, 3 * size // 4)
        images[i, 0][(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2] += 0.5
    return torch.from_numpy(np.clip(images, 0, 1)), torch.from_numpy(labels)


def _trainer(device: torch.device, epochs: int, callback: Any) -> Any:
    """A bare Lightning trainer on ``device`` (no logger, checkpoints or progress bar)."""
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def check_train(device: torch.device, epochs: int) -> dict[str, Any]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from training.module import ClassifierModule
    from training.preprocess import IMAGE_KEY, LABEL_KEY

    pl.seed_everything(0, workers=True, verbose=False)
    images, labels = _synthetic(256, 64, seed=1)
    val_images, val_labels = _synthetic(64, 64, seed=2)
    train = [{IMAGE_KEY: images[i], LABEL_KEY: labels[i]} for i in range(len(images))]
    val = [{IMAGE_KEY: val_images[i], LABEL_KEY: val_labels[i]} for i in range(len(val_images))]
    module = ClassifierModule("densenet121", num_classes=2, lr=1e-3)
    losses: list[float] = []
    aurocs: list[float] = []
    epoch_seconds: list[float] = []
    devices: set[str] = set()

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            devices.add(str(pl_module.device))
            epoch_seconds.append(time.perf_counter() - self.started)
            losses.append(float(trainer.callback_metrics["train_loss"]))

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if "val_auroc" in trainer.callback_metrics:
                aurocs.append(float(trainer.callback_metrics["val_auroc"]))

    trainer = _trainer(device, epochs, Record())
    trainer.fit(
        module,
        DataLoader(train, batch_size=32, shuffle=True),  # type: ignore[arg-type]
        DataLoader(val, batch_size=64),  # type: ignore[arg-type]
    )
    on = ",".join(sorted(devices))  # Lightning moves the module back to the CPU after fit
    ok = (len(losses) < 2 or losses[-1] < losses[0]) and bool(aurocs) and aurocs[-1] > 0.7
    return {
        "ok": ok,
        "trained_on": on,
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "val_auroc": [round(a, 3) for a in aurocs],
        "epoch_seconds": [round(s, 2) for s in epoch_seconds],
    }


def _loaded(module: torch.nn.Module, size: int) -> Any:
    from training.preprocess import PreprocessingSpec

    return types.SimpleNamespace(
        module=module, task="classification", name="cuda-check", preprocessing=PreprocessingSpec((size, size))
    )


def check_serve(device: torch.device, size: int) -> dict[str, Any]:
    from serving.config import ServedModel
    from serving.model import InProcessForward
    from serving.worker import ModelWorker
    from training.networks import build_network

    torch.manual_seed(0)
    net = build_network("densenet121", num_classes=2).eval()
    cpu_forward = InProcessForward(_loaded(copy.deepcopy(net), size))
    served = ServedModel(name="cuda-check", alias="production", num_gpus=1 if device.type == "cuda" else 0)
    worker = types.SimpleNamespace(served=served)
    gpu_loaded = _loaded(copy.deepcopy(net), size)
    forward = ModelWorker._forward_for(worker, gpu_loaded)  # type: ignore[arg-type]
    placed = str(next(gpu_loaded.module.parameters()).device)
    batch = np.random.default_rng(0).random((4, 1, size, size), dtype=np.float32)
    cpu_logits, cpu_embedding = cpu_forward.with_embedding(batch)
    logits, embedding = forward.with_embedding(batch)
    logits_diff = float(np.abs(cpu_logits - logits).max())
    embedding_diff = float(np.abs(cpu_embedding - embedding).max()) if embedding is not None else None

    module = gpu_loaded.module
    one = torch.from_numpy(batch[:1])
    eight = torch.from_numpy(np.repeat(batch, 2, axis=0))

    def raw(x: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return module(x.to(device)).cpu()

        return run

    for _ in range(5):
        raw(one)()
        forward.with_embedding(batch[:1])
    served_1 = _timed(lambda: forward.with_embedding(batch[:1]), device, 50)
    raw_1 = _timed(raw(one), device, 50)
    served_8 = _timed(lambda: forward.with_embedding(eight.numpy()), device, 20)
    raw_8 = _timed(raw(eight), device, 20)
    p50 = statistics.median(served_1) / statistics.median(raw_1)
    throughput = statistics.median(raw_8) / statistics.median(served_8)
    return {
        "ok": placed.startswith(device.type) and logits_diff < 1e-2 and (embedding_diff or 0) < 1e-2,
        "module_on": placed,
        "traced": forward.traced is not None,
        "max_abs_logit_diff_vs_cpu": logits_diff,
        "max_abs_embedding_diff_vs_cpu": embedding_diff,
        "batch1_p50_ms": {
            "served_forward": round(statistics.median(served_1), 3),
            "raw": round(statistics.median(raw_1), 3),
        },
        "batch8_ms": {
            "served_forward": round(statistics.median(served_8), 3),
            "raw": round(statistics.median(raw_8), 3),
        },
        "p50_ratio": round(p50, 3),
        "throughput_ratio": round(throughput, 3),
    }


def check_explain(device: torch.device, size: int) -> dict[str, Any]:
    from training.explain.core import Explainer
    from training.networks import build_network

    torch.manual_seed(0)
    net = build_network("densenet121", num_classes=2).eval()
    images, _ = _synthetic(2, size, seed=3)
    out: dict[str, Any] = {"ok": True}
    for method in ("gradcam", "ig", "occlusion"):
        maps = []
        seconds = []
        for target_device in (torch.device("cpu"), device):
            model = copy.deepcopy(net).to(target_device)
            explainer = Explainer(model, family="densenet")
            start = time.perf_counter()
            result = explainer.explain(images, method, target=1)
            _sync(target_device)
            seconds.append(time.perf_counter() - start)
            maps.append(np.asarray(result.maps, dtype=np.float32).ravel())
        corr = float(np.corrcoef(maps[0], maps[1])[0, 1])
        out[method] = {
            "corr_vs_cpu": round(corr, 4),
            "cpu_s": round(seconds[0], 3),
            f"{device.type}_s": round(seconds[1], 3),
        }
        out["ok"] = out["ok"] and corr > 0.98
    return out


def check_segment(device: torch.device) -> dict[str, Any]:
    from imaging.volumes.volume import Volume
    from training.segmentation.inference import segment_volume
    from training.segmentation.networks import build_segmentation_network
    from training.segmentation.spec import SegmentationSpec

    torch.manual_seed(0)
    spec = SegmentationSpec(labels={1: "a", 2: "b"}, spacing=(2.0, 2.0, 2.0), roi_size=(32, 64, 64))
    net = build_segmentation_network(spec.network, num_classes=3).eval()
    rng = np.random.default_rng(4)
    volume = Volume(
        array=rng.normal(100, 30, (48, 128, 128)).astype(np.float32),
        spacing=(2.5, 1.5, 1.5),
        origin=(0.0, 0.0, 0.0),
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    )
    labels, seconds = [], []
    for target_device in (torch.device("cpu"), device):
        start = time.perf_counter()
        result = segment_volume(copy.deepcopy(net).to(target_device), volume, spec)
        seconds.append(time.perf_counter() - start)
        labels.append(np.asarray(result.labels))
    agreement = float((labels[0] == labels[1]).mean())
    return {
        "ok": agreement > 0.99,
        "voxel_agreement_vs_cpu": round(agreement, 5),
        "cpu_s": round(seconds[0], 2),
        f"{device.type}_s": round(seconds[1], 2),
    }


def _blob_volume(seed: int, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    image = rng.normal(0, 0.3, shape).astype(np.float32)
    labels = np.zeros(shape, np.int64)
    for value, shift in ((1, -1), (2, 1)):
        centre = [s // 2 + shift * s // 5 + int(rng.integers(-2, 3)) for s in shape]
        radius = min(shape) // 6
        inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 < radius**2
        labels[inside] = value
        image[inside] += 1.0 * value
    return torch.from_numpy(image)[None], torch.from_numpy(labels)[None]


def check_train_segmentation(device: torch.device, epochs: int) -> dict[str, Any]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from training.preprocess import IMAGE_KEY, LABEL_KEY
    from training.segmentation.module import SegmentationModule
    from training.segmentation.spec import SegmentationSpec

    pl.seed_everything(0, workers=True, verbose=False)
    spec = SegmentationSpec(labels={1: "left", 2: "right"}, spacing=(1.0, 1.0, 1.0), roi_size=(32, 32, 32))
    train = []
    for seed in range(16):
        image, labels = _blob_volume(seed, (32, 32, 32))
        train.append({IMAGE_KEY: image, LABEL_KEY: labels})
    val = []
    for seed in range(100, 102):
        image, labels = _blob_volume(seed, (40, 48, 48))
        val.append({IMAGE_KEY: image, LABEL_KEY: labels})
    module = SegmentationModule(spec.to_dict(), lr=3e-3)
    dice: list[float] = []
    devices: set[str] = set()

    class Record(pl.Callback):
        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            devices.add(str(pl_module.device))
            if "val_dice" in trainer.callback_metrics:
                dice.append(float(trainer.callback_metrics["val_dice"]))

    trainer = _trainer(device, epochs, Record())
    started = time.perf_counter()
    trainer.fit(
        module,
        DataLoader(train, batch_size=4, shuffle=True),  # type: ignore[arg-type]
        DataLoader(val, batch_size=1),  # type: ignore[arg-type]
    )
    return {
        "ok": len(dice) > 1 and dice[-1] > dice[0] + 0.2,  # it learns on that device
        "trained_on": ",".join(sorted(devices)),
        "val_dice": [round(d, 3) for d in dice],
        "fit_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seg-epochs", type=int, default=30, help="3D segmentation training epochs")
    parser.add_argument("--size", type=int, default=224, help="classifier input size (serve/explain)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--parts", nargs="*", help="only these parts (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"check": "cuda", "ok": False, "error": "CUDA is not available"}))
        return 1
    report: dict[str, Any] = {
        "check": "cuda",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "serve": lambda: check_serve(device, args.size),
        "explain": lambda: check_explain(device, args.size),
        "segment": lambda: check_segment(device),
        "train": lambda: check_train(device, args.epochs),
        "train_segmentation": lambda: check_train_segmentation(device, args.seg_epochs),
    }
    if args.parts:
        unknown = set(args.parts) - set(parts)
        if unknown:
            parser.error(f"unknown parts {sorted(unknown)}; choose from {sorted(parts)}")
        parts = {name: part for name, part in parts.items() if name in args.parts}
    for name, part in parts.items():
        started = time.perf_counter()
        try:
            report[name] = part()
        except Exception as exc:  # one part failing must not hide the others
            report[name] = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-1500:],
            }
        report[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {json.dumps(report[name])}", file=sys.stderr, flush=True)
    report["ok"] = all(report[name].get("ok") for name in parts)
    line = json.dumps(report)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
