"""What a registered segmentation model expects: labels, voxel spacing, patch size, network.

One :class:`SegmentationSpec` is logged with every registered segmentation model as the
artifact ``segmentation.json``; inference (``training.segmentation.inference``), serving and
explanation rebuild the eval-time pipeline from it, so the network never sees differently
prepared voxels in production than in validation.

Network contract: input float32 ``(B, 1, Z, Y, X)`` resampled to :attr:`spacing` and
normalised per :attr:`intensity`; output logits ``(B, K + 1, Z, Y, X)`` where channel 0 is
background and channel ``k`` is :attr:`labels` ``[k]``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from governance.strict import StrictModel
from governance.tags import Tag

__all__ = [
    "SEGMENTATION_ARTIFACT",
    "SEGMENTATION_TASK",
    "TASK_TAG",
    "SegmentationIntensity",
    "SegmentationNetwork",
    "SegmentationSpec",
    "SegmentationSpecError",
    "check_roi_for_network",
]

#: Artifact path (inside the model artifact directory) holding the spec as JSON.
SEGMENTATION_ARTIFACT = "segmentation.json"
#: Model-version tag naming the task; segmentation versions carry ``radgate.task=segmentation``.
TASK_TAG = Tag.TASK
SEGMENTATION_TASK = "segmentation"


class SegmentationSpecError(ValueError):
    """A segmentation spec is invalid or unreadable; the message names the offending field."""


class SegmentationNetwork(StrEnum):
    """MONAI 3D networks a segmentation config may choose."""

    UNET = "unet"
    SWIN_UNETR = "swin_unetr"


class SegmentationIntensity(StrEnum):
    """How voxel values are normalised before the network."""

    #: Z-score over the non-zero voxels (MONAI ``NormalizeIntensity(nonzero=True)``): MR default.
    ZSCORE_NONZERO = "zscore_nonzero"
    #: Z-score over the whole volume.
    ZSCORE = "zscore"
    #: Min-max of the volume to [0, 1].
    MINMAX = "minmax"


def _member(enum: type[StrEnum], value: str, field: str) -> str:
    try:
        return enum(value).value
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"{field} must be one of {allowed}") from None


def check_roi_for_network(network: str, roi_size: tuple[int, int, int]) -> None:
    """Raise ValueError when the patch cannot pass through the network's down-sampling."""
    # SwinUNETR halves the grid five times, and its instance norm needs more than one voxel
    # at the bottom: each patch side must be a multiple of 32, at least 64.
    if network == SegmentationNetwork.SWIN_UNETR and any(s % 32 or s < 64 for s in roi_size):
        raise ValueError("swin_unetr needs roi_size a multiple of 32 and at least 64 on every axis")


class SegmentationSpec(StrictModel):
    """Labels, geometry and network of a 3D segmentation model (frozen, JSON round-trip)."""

    labels: dict[int, str] = Field(description="1..K -> structure name (0 is background).")
    spacing: tuple[float, float, float] = Field(
        description="Voxel spacing (z, y, x) in mm the model expects; inputs are resampled to it."
    )
    roi_size: tuple[int, int, int] = Field(description="Sliding-window patch (z, y, x) in voxels.")
    overlap: float = Field(default=0.25, ge=0, lt=1)
    intensity: str = SegmentationIntensity.ZSCORE_NONZERO.value
    network: str = SegmentationNetwork.UNET.value

    @field_validator("labels")
    @classmethod
    def _labels_one_to_k(cls, value: dict[int, str]) -> dict[int, str]:
        if not value:
            raise ValueError("labels must name at least one structure")
        if sorted(value) != list(range(1, len(value) + 1)):
            raise ValueError("label values must be 1..K without gaps (0 is background)")
        names = [name.strip() for name in value.values()]
        if any(not name for name in names):
            raise ValueError("structure names must be non-empty")
        if len(set(names)) != len(names):
            raise ValueError("structure names must be distinct")
        return {int(k): value[k].strip() for k in sorted(value)}

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("spacing must be positive (mm)")
        return value

    @field_validator("roi_size")
    @classmethod
    def _roi_size(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 8:
            raise ValueError("roi_size must be at least 8 voxels per axis")
        return value

    @field_validator("intensity")
    @classmethod
    def _intensity(cls, value: str) -> str:
        return _member(SegmentationIntensity, value, "intensity")

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        return _member(SegmentationNetwork, value, "network")

    @model_validator(mode="after")
    def _patch_fits_network(self) -> SegmentationSpec:
        check_roi_for_network(self.network, self.roi_size)
        return self

    @property
    def num_classes(self) -> int:
        """Output channels of the network: K structures + background."""
        return len(self.labels) + 1

    @property
    def structures(self) -> list[str]:
        """Structure names in label order (1..K)."""
        return [self.labels[k] for k in sorted(self.labels)]

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise SegmentationSpecError(f"invalid segmentation spec: {problems}") from None

    @classmethod
    def from_json(cls, text: str) -> SegmentationSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SegmentationSpecError(f"segmentation spec is not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise SegmentationSpecError("segmentation spec must be a JSON object")
        return cls.from_dict(data)

    def save(self, directory: Path) -> Path:
        """Write ``segmentation.json`` into ``directory`` (a model artifact folder)."""
        path = Path(directory) / SEGMENTATION_ARTIFACT
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: Path) -> SegmentationSpec:
        """Read a spec file, or ``segmentation.json`` inside a directory."""
        path = Path(path)
        if path.is_dir():
            path = path / SEGMENTATION_ARTIFACT
        try:
            return cls.from_json(path.read_text())
        except OSError as exc:
            raise SegmentationSpecError(f"cannot read segmentation spec: {exc.strerror}") from None
