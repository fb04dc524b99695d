"""Preprocessing shared by training, evaluation, explanation and serving: DICOM file -> tensor.

One :class:`PreprocessingSpec` is recorded with every registered model (``preprocessing.json``
in the model artifact and the ``radgate.preprocessing`` tag); serving and explanation rebuild
the exact eval-time pipeline from it with :meth:`PreprocessingSpec.eval_transform` or
:func:`preprocess_dicom`, so the model never sees differently prepared pixels in production.

Pipeline (MONAI): ``LoadImage`` with the pydicom reader (rescale slope/intercept applied, no
axis swap: the tensor is in the DICOM (row, column) order of ``pixel_array``), windowing from
the DICOM header (:class:`HeaderWindowd`), channel first, resize to ``spatial_size``, then
training-only augmentation.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "HeaderWindowd",
    "IntensityMode",
    "PreprocessingSpec",
    "preprocess_dicom",
]

IMAGE_KEY = "image"
LABEL_KEY = "label"


class IntensityMode(StrEnum):
    """How raw pixel values become [0, 1]."""

    #: Window from the header's first WindowCenter/WindowWidth (PS3.3 C.11.2.1.2, linear);
    #: min-max of the image when the header has none. MONOCHROME1 is inverted.
    DICOM_WINDOW = "dicom_window"
    #: Min-max of the image.
    MINMAX = "minmax"


@dataclass(frozen=True)
class PreprocessingSpec:
    """What a model expects: recorded at training time, rebuilt at serving time."""

    spatial_size: tuple[int, int] = (64, 64)
    intensity: IntensityMode = IntensityMode.DICOM_WINDOW
    channels: int = 1
    #: Tensor layout the network consumes: N x C x H x W, float32, values in [0, 1].
    layout: str = "NCHW"
    augment: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spatial_size"] = list(self.spatial_size)
        data["intensity"] = str(self.intensity)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessingSpec:
        size = data.get("spatial_size", (64, 64))
        return cls(
            spatial_size=(int(size[0]), int(size[1])),
            intensity=IntensityMode(data.get("intensity", IntensityMode.DICOM_WINDOW)),
            channels=int(data.get("channels", 1)),
            layout=str(data.get("layout", "NCHW")),
            augment={str(k): float(v) for k, v in dict(data.get("augment", {})).items()},
        )

    def eval_transform(self) -> Any:
        """MONAI Compose for ``{"image": path}`` dicts -> ``{"image": Tensor[C, H, W]}``."""
        return _compose(self, train=False)

    def train_transform(self) -> Any:
        """The eval pipeline plus the augmentation recorded in ``augment``."""
        return _compose(self, train=True)


def _dicom_json_value(meta: Mapping[Hashable, Any], tag: str) -> Any:
    element = meta.get(tag)
    if isinstance(element, Mapping):
        values = element.get("Value") or []
        return values[0] if values else None
    return element


class HeaderWindowd:
    """MONAI-style dict transform: apply the DICOM header's VOI window and scale to [0, 1].

    Reads the first WindowCenter/WindowWidth and PhotometricInterpretation from the metadata
    that ``PydicomReader(prune_metadata=False)`` attaches, then drops that metadata (it may
    hold identifiers on data that was not de-identified).
    """

    def __init__(self, keys: Sequence[str] = (IMAGE_KEY,), mode: IntensityMode = IntensityMode.DICOM_WINDOW):
        self.keys = tuple(keys)
        self.mode = IntensityMode(mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.keys:
            image = out[key]
            meta = dict(getattr(image, "meta", {}) or {})
            values = torch.as_tensor(image, dtype=torch.float32)
            values = values.as_tensor() if hasattr(values, "as_tensor") else values
            center = _dicom_json_value(meta, "00281050")
            width = _dicom_json_value(meta, "00281051")
            if self.mode is IntensityMode.DICOM_WINDOW and center is not None and width and float(width) > 1:
                low = float(center) - 0.5 - (float(width) - 1) / 2
                scaled = (values - low) / (float(width) - 1)
            else:
                low, high = float(values.min()), float(values.max())
                scaled = (values - low) / max(high - low, 1e-6)
            scaled = scaled.clamp(0.0, 1.0)
            if _dicom_json_value(meta, "00280004") == "MONOCHROME1":
                scaled = 1.0 - scaled
            out[key] = scaled
        return out


def _compose(spec: PreprocessingSpec, *, train: bool) -> Any:
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        Resized,
    )

    steps: list[Any] = [
        # swap_ij=False keeps DICOM row/column order; the window tags live in the metadata.
        LoadImaged(
            keys=IMAGE_KEY, reader="PydicomReader", image_only=True, swap_ij=False, prune_metadata=False
        ),
        HeaderWindowd(keys=(IMAGE_KEY,), mode=spec.intensity),
        EnsureChannelFirstd(keys=IMAGE_KEY, channel_dim="no_channel"),
        Resized(keys=IMAGE_KEY, spatial_size=spec.spatial_size, mode="area"),
    ]
    if train and spec.augment:
        flip = spec.augment.get("flip_prob", 0.0)
        if flip:
            steps.append(RandFlipd(keys=IMAGE_KEY, prob=flip, spatial_axis=1))
        affine = spec.augment.get("affine_prob", 0.0)
        if affine:
            steps.append(
                RandAffined(
                    keys=IMAGE_KEY,
                    prob=affine,
                    rotate_range=spec.augment.get("rotate_rad", 0.1),
                    scale_range=spec.augment.get("scale", 0.05),
                    padding_mode="border",
                )
            )
        noise = spec.augment.get("noise_prob", 0.0)
        if noise:
            steps.append(RandGaussianNoised(keys=IMAGE_KEY, prob=noise, std=0.02))
    steps.append(EnsureTyped(keys=IMAGE_KEY, dtype=torch.float32, track_meta=False))
    return Compose(steps)


def preprocess_dicom(source: Path | str | bytes, spec: PreprocessingSpec) -> torch.Tensor:
    """One DICOM (path or bytes) -> ``Tensor[1, C, H, W]`` ready for the model (eval pipeline)."""
    transform = spec.eval_transform()
    if isinstance(source, bytes):
        with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
            handle.write(source)
            handle.flush()
            image = transform({IMAGE_KEY: handle.name})[IMAGE_KEY]
    else:
        image = transform({IMAGE_KEY: str(source)})[IMAGE_KEY]
    tensor = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if tensor.shape[0] != spec.channels:
        tensor = tensor.expand(spec.channels, *tensor.shape[1:])
    return tensor.unsqueeze(0)
