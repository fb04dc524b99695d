"""Explanations of 3D segmentation models: which voxels drive the prediction of one structure.

The target is the structure's **summed logit** over the patch (a scalar per input), so the
classification machinery applies: Captum ``LayerGradCam`` on a decoder layer (default: the
last layer with parameters before the output head whose output keeps 3D feature maps) or
Captum ``Occlusion`` over 3D patches. Attribution runs on one ``spec.roi_size`` patch of the
network input (resampled and normalised as :func:`segment_volume` does), centred on the
structure, and is mapped back to the source grid; :func:`render_slices` draws a few slices
through the structure as PNG overlays.

:func:`segmentation_sanity_check` adapts the parameter-randomisation check (Adebayo et al.
2018): attributions of the trained network are compared (Spearman over the 3D map) with those
of a copy whose parameters are all re-initialised; a faithful method gives a low similarity,
while the same network twice (the control) gives 1.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from governance.tags import Tag

if TYPE_CHECKING:
    import torch
    from torch import nn

    from imaging.volumes import Volume
    from training.segmentation.spec import SegmentationSpec

__all__ = [
    "SegmentationExplainMethod",
    "SegmentationExplanation",
    "SegmentationSanity",
    "explain_series",
    "explain_structure",
    "render_slices",
    "segmentation_sanity_check",
]


class SegmentationExplainMethod(StrEnum):
    GRADCAM = "gradcam"
    OCCLUSION = "occlusion"


class _StructureScore:
    """``model(x)[:, k]`` summed over the patch: a (B, 1) score for Captum."""

    def __init__(self, model: nn.Module, label: int) -> None:
        self.model, self.label = model, label

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.label].flatten(1).sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class SegmentationExplanation:
    """Attribution ``(Z, Y, X)`` in [0, 1] on the source grid for one structure."""

    structure: str
    label: int
    method: SegmentationExplainMethod
    attribution: np.ndarray
    patch_origin: tuple[int, int, int]  # model-grid voxel of the patch corner
    layer: str | None


def decoder_layer(model: nn.Module, example: torch.Tensor) -> str:
    """The last 3D convolution (in forward order) whose output has more channels than the
    network's output: the deepest decoder features, where Grad-CAM is spatially sharpest."""
    import torch

    order: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv3d | torch.nn.ConvTranspose3d):
            hooks.append(
                module.register_forward_hook(
                    lambda _m, _i, out, n=name: (
                        order.append((n, tuple(out.shape))) if isinstance(out, torch.Tensor) else None
                    )
                )
            )
    try:
        with torch.no_grad():
            output = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    classes = int(output.shape[1])
    for name, shape in reversed(order):
        if len(shape) == 5 and shape[1] > classes:
            return name
    raise ValueError("no decoder layer with 3D feature maps found")


def _patch(shape: Sequence[int], roi: Sequence[int], centre: Sequence[float]) -> tuple[int, int, int]:
    corner = [round(c - r / 2) for c, r in zip(centre, roi, strict=True)]
    return tuple(max(0, min(c, max(0, n - r))) for c, n, r in zip(corner, shape, roi, strict=True))  # type: ignore[return-value]


def _crop(inputs: torch.Tensor, origin: Sequence[int], roi: Sequence[int]) -> torch.Tensor:
    import torch.nn.functional as F

    z, y, x = origin
    patch = inputs[..., z : z + roi[0], y : y + roi[1], x : x + roi[2]]
    missing = [r - s for r, s in zip(roi, patch.shape[2:], strict=True)]
    if any(missing):  # a volume smaller than the window: pad like sliding_window_inference does
        patch = F.pad(patch, (0, missing[2], 0, missing[1], 0, missing[0]))
    return patch


def _attribute(
    model: nn.Module,
    patch: torch.Tensor,
    label: int,
    method: SegmentationExplainMethod,
    layer: str | None,
    occlusion_fraction: int,
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F
    from captum.attr import LayerGradCam, Occlusion

    score = _StructureScore(model, label)
    if method is SegmentationExplainMethod.GRADCAM:
        assert layer is not None
        cam = LayerGradCam(score, dict(model.named_modules())[layer])
        with torch.enable_grad():
            maps = cam.attribute(patch.clone().requires_grad_(True), target=0, relu_attributions=True)
        maps = F.interpolate(
            maps.detach().float(), size=patch.shape[2:], mode="trilinear", align_corners=False
        )
    else:
        # Non-overlapping blocks of 1/fraction of the patch per axis: fraction**3 forward passes.
        window = (1, *(max(1, s // occlusion_fraction) for s in patch.shape[2:]))
        strides = window
        with torch.no_grad():
            maps = Occlusion(score).attribute(
                patch, sliding_window_shapes=window, strides=strides, target=0, baselines=0.0
            )
        maps = maps.clamp(min=0)
    return maps[0, 0]


def _unit(array: np.ndarray) -> np.ndarray:
    top = float(array.max()) if array.size else 0.0
    return (array / top).astype(np.float32) if top > 0 else np.zeros_like(array, dtype=np.float32)


def explain_structure(
    model: nn.Module,
    volume: Volume,
    spec: SegmentationSpec,
    structure: str | int,
    *,
    method: SegmentationExplainMethod | str = SegmentationExplainMethod.GRADCAM,
    labels: np.ndarray | None = None,
    layer: str | None = None,
    occlusion_fraction: int = 4,
) -> SegmentationExplanation:
    """Attribution for ``structure`` (name or label value) on ``volume``'s grid.

    ``labels`` (the source-grid result of :func:`segment_volume`) centres the patch on the
    structure; without it the patch is centred on the volume.
    """
    import torch
    import torch.nn.functional as F

    from training.segmentation.inference import prepare_volume

    by_name = {name: k for k, name in spec.labels.items()}
    label = int(structure) if str(structure).isdigit() else by_name.get(str(structure), -1)
    if label not in spec.labels:
        raise ValueError(
            f"unknown structure {str(structure)[:64]!r}; the model segments {', '.join(spec.structures)}"
        )
    chosen = SegmentationExplainMethod(method)
    inputs = prepare_volume(volume.array, volume.spacing, spec)
    grid = inputs.shape[2:]
    scale = [g / s for g, s in zip(grid, volume.array.shape, strict=True)]
    voxels = np.argwhere(labels == label) if labels is not None else np.empty((0, 3))
    centre = voxels.mean(axis=0) * scale if len(voxels) else [g / 2 for g in grid]
    origin = _patch(grid, spec.roi_size, centre)
    patch = _crop(inputs, origin, spec.roi_size)
    model = model.eval()
    if chosen is SegmentationExplainMethod.GRADCAM and layer is None:
        layer = decoder_layer(model, patch)
    maps = _attribute(model, patch, label, chosen, layer, occlusion_fraction)
    full = torch.zeros(grid, dtype=torch.float32)
    z, y, x = origin
    inside = [min(r, g - o) for r, g, o in zip(spec.roi_size, grid, origin, strict=True)]
    dz, dy, dx = inside
    full[z : z + dz, y : y + dy, x : x + dx] = maps[:dz, :dy, :dx]
    source = F.interpolate(full[None, None], size=volume.array.shape, mode="trilinear", align_corners=False)
    return SegmentationExplanation(
        structure=spec.labels[label],
        label=label,
        method=chosen,
        attribution=_unit(source[0, 0].numpy()),
        patch_origin=origin,
        layer=layer if chosen is SegmentationExplainMethod.GRADCAM else None,
    )


def render_slices(
    volume: Volume,
    explanation: SegmentationExplanation,
    *,
    model_name: str,
    model_version: str,
    count: int = 3,
    approval: str | None = None,
) -> list[tuple[int, bytes]]:
    """PNG overlays of ``count`` slices with the most attribution: ``[(slice index, png)]``."""
    from imaging.results import OverlayCaption, render_overlay_png

    mass = explanation.attribution.reshape(explanation.attribution.shape[0], -1).sum(axis=1)
    chosen = sorted(int(z) for z in np.argsort(-mass)[: max(1, count)])
    out = []
    for z in chosen:
        image = volume.array[z].astype(np.float32)
        low, high = np.percentile(image, (1, 99))
        shown = np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)
        caption = OverlayCaption(
            model_name=model_name,
            model_version=model_version,
            method=f"{explanation.method.value} ({explanation.structure}, slice {z + 1})",
            finding=explanation.structure,
            approval=approval,
        )
        out.append((z, render_overlay_png(shown, explanation.attribution[z], caption)))
    return out


@dataclass(frozen=True)
class SegmentationSanity:
    """Trained-vs-randomised similarity of one structure's attribution (lower is better)."""

    method: str
    structure: str
    spearman: float
    control_spearman: float
    threshold: float

    @property
    def passed(self) -> bool:
        # The control is the same network twice: 1 up to float-summation order in backward passes.
        return abs(self.spearman) <= self.threshold and self.control_spearman >= 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "structure": self.structure,
            "spearman": round(self.spearman, 4),
            "control_spearman": round(self.control_spearman, 4),
            "threshold": self.threshold,
            "passed": self.passed,
        }


def segmentation_sanity_check(
    model: nn.Module,
    volume: Volume,
    spec: SegmentationSpec,
    structure: str | int,
    *,
    method: SegmentationExplainMethod | str = SegmentationExplainMethod.GRADCAM,
    labels: np.ndarray | None = None,
    threshold: float = 0.5,
    seed: int = 0,
) -> SegmentationSanity:
    """Parameter randomisation for a segmentation model (see the module docstring)."""
    from training.explain.sanity import randomize_parameters, spearman

    first = explain_structure(model, volume, spec, structure, method=method, labels=labels)
    again = explain_structure(model, volume, spec, structure, method=method, labels=labels, layer=first.layer)
    randomised = copy.deepcopy(model)
    randomize_parameters(randomised, seed)
    other = explain_structure(
        randomised, volume, spec, structure, method=method, labels=labels, layer=first.layer
    )
    return SegmentationSanity(
        method=first.method.value,
        structure=first.structure,
        spearman=spearman(first.attribution, other.attribution),
        control_spearman=spearman(first.attribution, again.attribution),
        threshold=threshold,
    )


def explain_series(
    loaded: Any,
    files: Sequence[Path],
    structure: str,
    out: Path,
    *,
    method: SegmentationExplainMethod | str = SegmentationExplainMethod.GRADCAM,
    slices: int = 3,
    sanity: bool = False,
) -> dict[str, Any]:
    """One series (DICOM files) with a registered segmentation model -> ``out``: a PNG per
    chosen slice and ``explanation.json`` (structure volumes, slices, sanity). Raises
    ``ValueError`` subclasses with PHI-free messages (not a segmentation model, not one
    series, unknown structure)."""
    import json

    from imaging.volumes import assemble_series, group_series
    from training.segmentation.inference import segment_volume, spec_of

    spec = spec_of(loaded)
    if spec is None:
        raise ValueError(f"{loaded.name}/{loaded.version} is not a segmentation model")
    groups = group_series(list(files))
    if len(groups) != 1:
        raise ValueError(f"expected the files of one series, found {len(groups)} series")
    volume = assemble_series(next(iter(groups.values())))
    result = segment_volume(loaded.module, volume, spec)
    explanation = explain_structure(
        loaded.module, volume, spec, structure, method=method, labels=result.labels
    )
    approval = loaded.tags.get(Tag.STATUS, "unknown")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for z, png in render_slices(
        volume,
        explanation,
        model_name=loaded.name,
        model_version=loaded.version,
        count=slices,
        approval=approval,
    ):
        path = out / f"{explanation.method.value}-{explanation.structure}-slice{z + 1:03d}.png"
        path.write_bytes(png)
        written.append(str(path))
    summary: dict[str, Any] = {
        "model": {"name": loaded.name, "version": loaded.version, "approval": approval},
        "structure": explanation.structure,
        "method": explanation.method.value,
        "layer": explanation.layer,
        "slices": [int(Path(p).stem.rsplit("slice", 1)[1]) for p in written],
        "pngs": written,
        "segmentation": result.to_dict(),
    }
    if sanity:
        check = segmentation_sanity_check(
            loaded.module, volume, spec, explanation.label, method=method, labels=result.labels
        )
        summary["sanity"] = check.to_dict()
    (out / "explanation.json").write_text(json.dumps(summary, indent=2))
    return summary
