"""Segment one assembled series with a registered 3D model: the eval-time pipeline of the spec.

:func:`segment_volume` takes a :class:`imaging.volumes.Volume` and the model's
:class:`~training.segmentation.spec.SegmentationSpec` and returns a :class:`SegmentationResult`
with a label volume on the *source* grid (same ``(Z, Y, X)`` shape and slice order as
``volume.array``, so label slice ``z`` belongs to ``volume.sop_instance_uids[z]``), the volume of
each structure in millilitres and the time of each step.

Steps (each in :func:`prepare_volume` / :func:`logits_to_source`, which training's validation
and the benchmark reuse):

1. resample the array (axes as :class:`Volume` stores them: slices along the normal, rows,
   columns) to ``spec.spacing`` with trilinear interpolation over the same field of view
   (the grid of ``training.segmentation.data.model_grid``, as training's ``eval_transform``);
2. normalise as ``spec.intensity`` says (MONAI ``NormalizeIntensity`` / ``ScaleIntensity``);
3. MONAI ``sliding_window_inference`` with ``spec.roi_size``, ``spec.overlap``, Gaussian blending;
4. logits resampled back to the source shape (trilinear over the same field of view), argmax.

Interpolating logits rather than labels keeps thin structures when the model grid is coarser
than the source. Volumes are voxel counts on the source grid times the source voxel volume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from imaging.volumes import Volume
    from training.segmentation.spec import SegmentationSpec

__all__ = [
    "SegmentationInferenceError",
    "SegmentationResult",
    "logits_to_source",
    "prepare_volume",
    "segment_volume",
    "spec_of",
]

#: Sliding-window patches evaluated per forward call.
DEFAULT_SW_BATCH_SIZE = 2


class SegmentationInferenceError(ValueError):
    """The volume cannot be segmented with this model (empty, wrong shape, wrong output)."""


@dataclass(frozen=True)
class SegmentationResult:
    """Labels ``(Z, Y, X)`` uint8 on the source grid, per-structure volumes and timings."""

    labels: np.ndarray
    structures: dict[int, str]
    volumes_ml: dict[str, float]
    voxel_counts: dict[str, int]
    spacing: tuple[float, float, float]
    model_grid: tuple[int, int, int]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def present(self) -> list[int]:
        """Label values (1..K) with at least one voxel."""
        return [k for k, name in self.structures.items() if self.voxel_counts.get(name, 0) > 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON summary (no voxels)."""
        return {
            "structures": [
                {
                    "label": k,
                    "name": name,
                    "volume_ml": self.volumes_ml[name],
                    "voxels": self.voxel_counts[name],
                }
                for k, name in self.structures.items()
            ],
            "shape": list(self.labels.shape),
            "spacing_mm": list(self.spacing),
            "model_grid": list(self.model_grid),
            "timings_ms": dict(self.timings_ms),
        }


def spec_of(loaded: Any) -> SegmentationSpec | None:
    """The spec of a loaded registered model (``training.registry.LoadedModel``): its
    ``segmentation`` field, else the ``segmentation.json`` artifact in its downloaded,
    hash-verified directory; None for a model that does not segment."""
    from pathlib import Path

    from training.segmentation.spec import SEGMENTATION_ARTIFACT, SegmentationSpec, SegmentationSpecError

    spec = getattr(loaded, "segmentation", None)
    if isinstance(spec, SegmentationSpec):
        return spec
    local_dir = getattr(loaded, "local_dir", None)
    found = sorted(Path(local_dir).rglob(SEGMENTATION_ARTIFACT)) if local_dir else []
    try:
        return SegmentationSpec.load(found[0]) if found else None
    except SegmentationSpecError:
        return None


def _normalise(tensor: torch.Tensor, intensity: str) -> torch.Tensor:
    from monai.transforms import NormalizeIntensity, ScaleIntensity

    from training.segmentation.spec import SegmentationIntensity

    mode = SegmentationIntensity(intensity)
    if mode is SegmentationIntensity.MINMAX:
        out = ScaleIntensity(minv=0.0, maxv=1.0)(tensor)
    else:
        out = NormalizeIntensity(nonzero=mode is SegmentationIntensity.ZSCORE_NONZERO)(tensor)
    return torch_tensor(out)


def torch_tensor(value: Any) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MONAI transforms may return MetaTensor)."""
    from monai.data import MetaTensor

    return value.as_tensor() if isinstance(value, MetaTensor) else value


def prepare_volume(
    array: np.ndarray, spacing: tuple[float, float, float], spec: SegmentationSpec
) -> torch.Tensor:
    """``(Z, Y, X)`` voxels at ``spacing`` -> network input ``(1, 1, Z', Y', X')`` float32."""
    import torch
    import torch.nn.functional as F

    from training.segmentation.data import model_grid

    if array.ndim != 3 or min(array.shape) < 1:
        raise SegmentationInferenceError(f"expected a (Z, Y, X) volume, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SegmentationInferenceError("the volume has non-finite voxel values")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    grid = model_grid(array.shape, spacing, spec.spacing)
    if grid != tuple(array.shape):
        tensor = F.interpolate(tensor, size=grid, mode="trilinear", align_corners=False)
    return _normalise(tensor[0], spec.intensity)[None].contiguous()


def logits_to_source(logits: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """Logits ``(1, K+1, Z', Y', X')`` -> labels ``(Z, Y, X)`` uint8 on the source grid."""
    import torch
    import torch.nn.functional as F

    if tuple(logits.shape[2:]) != tuple(shape):
        logits = F.interpolate(logits, size=shape, mode="trilinear", align_corners=False)
    # max(dim=0).indices is argmax (first maximum on ties); on CPU it is an order of magnitude
    # faster than argmax over the leading (channel) dimension of a large volume.
    return logits[0].max(dim=0).indices.to(dtype=torch.uint8).cpu().numpy()


def segment_volume(
    module: torch.nn.Module,
    volume: Volume,
    spec: SegmentationSpec,
    *,
    sw_batch_size: int = DEFAULT_SW_BATCH_SIZE,
) -> SegmentationResult:
    """Segment ``volume`` with ``module`` as ``spec`` says (see the module docstring)."""
    import torch
    from monai.inferers import sliding_window_inference

    started = time.perf_counter()
    array = np.asarray(volume.array)
    spacing = tuple(float(s) for s in volume.spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise SegmentationInferenceError("the volume has no positive (z, y, x) spacing")
    inputs = prepare_volume(array, spacing, spec)
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    inputs = inputs.to(device)
    prepared = time.perf_counter()
    with torch.inference_mode():
        logits = torch_tensor(
            sliding_window_inference(
                inputs,
                roi_size=spec.roi_size,
                sw_batch_size=sw_batch_size,
                predictor=module,
                overlap=spec.overlap,
                mode="gaussian",
            )
        )
    inferred = time.perf_counter()
    if logits.ndim != 5 or logits.shape[1] != spec.num_classes:
        raise SegmentationInferenceError(
            f"the network returned {tuple(logits.shape)}; expected (1, {spec.num_classes}, Z, Y, X)"
        )
    with torch.inference_mode():
        labels = logits_to_source(logits.float(), array.shape)
    counts = np.bincount(labels.ravel(), minlength=spec.num_classes)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    names = {int(k): v for k, v in spec.labels.items()}
    done = time.perf_counter()
    return SegmentationResult(
        labels=labels,
        structures=names,
        volumes_ml={name: round(int(counts[k]) * voxel_ml, 3) for k, name in names.items()},
        voxel_counts={name: int(counts[k]) for k, name in names.items()},
        spacing=spacing,
        model_grid=tuple(inputs.shape[2:]),  # type: ignore[arg-type]
        timings_ms={
            "preprocess": round((prepared - started) * 1000, 2),
            "sliding_window": round((inferred - prepared) * 1000, 2),
            "postprocess": round((done - inferred) * 1000, 2),
        },
    )
