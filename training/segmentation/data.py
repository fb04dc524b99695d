"""MONAI dictionary transforms and the Lightning data module for 3D segmentation.

Rows are what :func:`imaging.volumes.materialize_segmentation` returns: ``{"image": NIfTI path,
"label": NIfTI path (uint8, same grid), "split", "patient", "series_uid", "subgroups"}``. The
NIfTI arrays are in :class:`imaging.volumes.Volume` order ``(Z, Y, X)`` (slices along the
normal, rows, columns) and are kept in that order, without reorientation: the network sees the
series' own grid, exactly as ``training.segmentation.inference`` feeds it a ``Volume`` at
serving time.

Eval pipeline (validation, evaluation): load, channel first, resample the same field of view to
``spec.spacing`` (trilinear for the image, nearest for the label; the grid is
``round(n * spacing / target)`` per axis, as inference computes it), normalise per
``spec.intensity``. Training adds padding to ``spec.roi_size``, class-balanced patches
(``RandCropByLabelClassesd``: a share ``pos_fraction`` of the patches centred on structure voxels,
split equally between the structures so a small one is seen as often as a large one; the rest
centred anywhere in the volume) and light augmentation (small affine, intensity scale/shift,
noise). No flips: atlas structures are lateralised (left and right hippocampus are different
labels).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from training.module import CachedRowsDataModule
from training.segmentation.spec import SegmentationIntensity, SegmentationSpec

__all__ = [
    "IMAGE_KEY",
    "LABEL_KEY",
    "ResampleToSpacingd",
    "SegmentationAugment",
    "SegmentationFitOptions",
    "VolumeDataModule",
    "eval_transform",
    "model_grid",
    "train_transform",
]

IMAGE_KEY = "image"
LABEL_KEY = "label"
KEYS = (IMAGE_KEY, LABEL_KEY)


def model_grid(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, int, int]:
    """Grid covering the same field of view at ``target`` spacing (at least one voxel per axis)."""
    z, y, x = (max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))
    return z, y, x


class ResampleToSpacingd:
    """Resample ``(C, Z, Y, X)`` MetaTensors to the spec's spacing over the same field of view.

    The spacing of each input is read from its affine (``pixdim``); the image is interpolated
    trilinearly and the label by nearest neighbour (MONAI ``Resize``).
    """

    def __init__(self, keys: Sequence[str], spacing: Sequence[float], modes: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self.spacing = tuple(float(s) for s in spacing)
        self.modes = tuple(modes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.transforms import Resize

        out = dict(data)
        for key, mode in zip(self.keys, self.modes, strict=True):
            tensor = out[key]
            source = [float(s) for s in tensor.pixdim[:3]]
            grid = model_grid(tensor.shape[1:], source, self.spacing)
            if tuple(tensor.shape[1:]) != grid:
                out[key] = Resize(grid, mode=mode)(tensor)
        return out


def _normalise(spec: SegmentationSpec) -> Any:
    from monai.transforms import NormalizeIntensityd, ScaleIntensityd

    mode = SegmentationIntensity(spec.intensity)
    if mode is SegmentationIntensity.MINMAX:
        return ScaleIntensityd(IMAGE_KEY, minv=0.0, maxv=1.0)
    return NormalizeIntensityd(IMAGE_KEY, nonzero=mode is SegmentationIntensity.ZSCORE_NONZERO)


def eval_transform(spec: SegmentationSpec, *, with_label: bool = True) -> Any:
    """Load, channel first, resample to ``spec.spacing``, normalise (image float32, label uint8)."""
    from monai.transforms import Compose

    return Compose(_eval_steps(spec, with_label=with_label))


def _eval_steps(spec: SegmentationSpec, *, with_label: bool) -> list[Any]:
    from monai.transforms import EnsureChannelFirstd, EnsureTyped, LoadImaged

    keys = list(KEYS if with_label else (IMAGE_KEY,))
    modes = ["trilinear", "nearest"][: len(keys)]
    steps: list[Any] = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
        EnsureTyped(IMAGE_KEY, dtype=torch.float32),
        ResampleToSpacingd(keys, spec.spacing, modes),
        _normalise(spec),
    ]
    if with_label:
        steps.append(EnsureTyped(LABEL_KEY, dtype=torch.uint8))
    return steps


@dataclass(frozen=True)
class SegmentationAugment:
    """Light augmentation settings (from the config's ``data.augment``)."""

    affine_prob: float = 0.3
    rotate_rad: float = 0.1
    scale: float = 0.05
    noise_prob: float = 0.0


@dataclass(frozen=True)
class SegmentationFitOptions:
    """What a training worker needs beyond the spec (plain data: pickles to Ray workers)."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    samples_per_volume: int = 4
    pos_fraction: float = 0.67
    sw_batch_size: int = 4
    augment: SegmentationAugment = field(default_factory=SegmentationAugment)


def train_transform(
    spec: SegmentationSpec,
    *,
    samples_per_volume: int = 4,
    pos_fraction: float = 0.67,
    augment: SegmentationAugment | None = None,
) -> Any:
    """The eval pipeline, then patches of ``spec.roi_size`` and augmentation."""
    from monai.transforms import (
        ClassesToIndicesd,
        Compose,
        DeleteItemsd,
        RandAffined,
        RandCropByLabelClassesd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    augment = augment or SegmentationAugment()
    # Patch-centre weights per class: background (any voxel of the volume) 1 - pos_fraction,
    # each structure pos_fraction / K. A class absent from a volume gets weight 0.
    structures = len(spec.labels)
    ratios = [1.0 - pos_fraction, *([pos_fraction / structures] * structures)]
    # One flat list: CacheDataset caches everything before the first random transform (the
    # voxel indices per class included).
    steps = [
        *_eval_steps(spec, with_label=True),
        SpatialPadd(list(KEYS), spatial_size=spec.roi_size),
        ClassesToIndicesd(LABEL_KEY, num_classes=spec.num_classes, indices_postfix="_class_indices"),
        RandCropByLabelClassesd(
            list(KEYS),
            label_key=LABEL_KEY,
            spatial_size=spec.roi_size,
            ratios=ratios,
            num_classes=spec.num_classes,
            num_samples=samples_per_volume,
            indices_key=f"{LABEL_KEY}_class_indices",
            allow_smaller=True,
            warn=False,
        ),
        DeleteItemsd(f"{LABEL_KEY}_class_indices"),  # per-volume lists: not collated
        RandScaleIntensityd(IMAGE_KEY, factors=0.1, prob=0.3),
        RandShiftIntensityd(IMAGE_KEY, offsets=0.1, prob=0.3),
    ]
    if augment.affine_prob > 0:
        steps.append(
            RandAffined(
                list(KEYS),
                prob=augment.affine_prob,
                rotate_range=[augment.rotate_rad] * 3,
                scale_range=[augment.scale] * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    if augment.noise_prob > 0:
        steps.append(RandGaussianNoised(IMAGE_KEY, prob=augment.noise_prob, std=0.05))
    return Compose(steps)


class VolumeDataModule(CachedRowsDataModule):
    """Train (patches) and validation (whole volumes, batch 1) loaders over materialised rows."""

    val_batch_size = 1  # whole volumes of different shapes
    drop_last = False

    def __init__(
        self,
        train_rows: Sequence[dict[str, Any]],
        val_rows: Sequence[dict[str, Any]],
        spec: SegmentationSpec,
        *,
        batch_size: int = 2,
        samples_per_volume: int = 4,
        pos_fraction: float = 0.67,
        augment: SegmentationAugment | None = None,
        cache_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        from monai.data import list_data_collate

        self.spec = spec
        self.samples_per_volume = samples_per_volume
        self.pos_fraction = pos_fraction
        self.augment = augment
        # Each volume yields samples_per_volume patches: a list MONAI's collate flattens.
        self.collate_fn = list_data_collate
        super().__init__(train_rows, val_rows, batch_size=batch_size, cache_rate=cache_rate, seed=seed)

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        return {key: str(row[key]) for key in KEYS}

    def transforms(self) -> tuple[Any, Any]:
        train = train_transform(
            self.spec, samples_per_volume=self.samples_per_volume, pos_fraction=self.pos_fraction,
            augment=self.augment,
        )  # fmt: skip
        return train, eval_transform(self.spec)
