"""Training run configuration: YAML validated by pydantic, with ``--set key=value`` overrides."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from governance.strict import StrictModel
from training.networks import NetworkFamily
from training.preprocess import IntensityMode, PreprocessingSpec
from training.segmentation.spec import SegmentationIntensity, SegmentationNetwork, SegmentationSpec

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "ModelConfig",
    "OperatingPoint",
    "OptimConfig",
    "RegistryConfig",
    "RunSettings",
    "SegmentationConfig",
    "TrainConfig",
    "TrainTask",
    "apply_overrides",
    "load_config",
]


class ConfigError(ValueError):
    """A training config is unreadable or invalid; the message names the offending fields."""


class AugmentConfig(StrictModel):
    flip_prob: float = Field(default=0.5, ge=0, le=1, description="Left-right flip probability.")
    affine_prob: float = Field(default=0.3, ge=0, le=1, description="Small rotation/scale probability.")
    rotate_rad: float = Field(default=0.1, ge=0, le=1)
    scale: float = Field(default=0.05, ge=0, le=0.5)
    noise_prob: float = Field(default=0.0, ge=0, le=1)


class DataConfig(StrictModel):
    dataset: str = Field(description="Dataset version: id, id prefix, NAME or NAME@IDPREFIX.")
    spatial_size: tuple[int, int] = (64, 64)
    intensity: IntensityMode = IntensityMode.DICOM_WINDOW
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    cache_rate: float = Field(default=1.0, ge=0, le=1, description="Fraction cached by MONAI CacheDataset.")
    batch_size: int = Field(default=16, ge=1)

    @field_validator("spatial_size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError("spatial_size must be at least 8x8")
        return value

    def preprocessing(self) -> PreprocessingSpec:
        return PreprocessingSpec(
            spatial_size=self.spatial_size,
            intensity=self.intensity,
            augment={k: float(v) for k, v in self.augment.model_dump().items()},
        )


class ModelConfig(StrictModel):
    network: NetworkFamily = NetworkFamily.DENSENET121
    dropout: float = Field(default=0.0, ge=0, lt=1)


class OptimConfig(StrictModel):
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    max_epochs: int = Field(default=5, ge=1)


class RunSettings(StrictModel):
    workers: int = Field(
        default=1, ge=1, description="1 = plain Lightning; N > 1 = Ray Train with N workers."
    )
    cpus_per_worker: int = Field(default=1, ge=1)
    gpus_per_worker: float = Field(default=0, ge=0, description="GPUs per Ray worker (0 = CPU).")
    ray_address: str | None = Field(
        default=None, description="Ray cluster address; default local or RAY_ADDRESS."
    )
    seed: int = 0
    experiment: str = "radgate"
    run_name: str | None = None
    resume_from: str | None = Field(
        default=None, description="MLflow run id of an interrupted run to resume."
    )


class OperatingPoint(StrEnum):
    YOUDEN = "youden"
    SENSITIVITY = "sensitivity"


class EvaluationConfig(StrictModel):
    operating_point: OperatingPoint = OperatingPoint.YOUDEN
    target_sensitivity: float = Field(default=0.9, gt=0, le=1)
    calibration_bins: int = Field(default=10, ge=2)
    min_subgroup_size: int = Field(
        default=5, ge=1, description="Smaller subgroups are reported but not gapped."
    )


class RegistryConfig(StrictModel):
    model_name: str = Field(default="radgate-classifier", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    enabled: bool = Field(default=True, description="Register a new model version after evaluation.")
    torchscript: bool = True


class TrainTask(StrEnum):
    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


class SegmentationConfig(StrictModel):
    """The ``segmentation:`` section (``task: segmentation``): geometry, network and patch sampling.

    Structure labels come from the dataset version; with them this section becomes the
    :class:`~training.segmentation.spec.SegmentationSpec` registered with the model.
    """

    spacing: tuple[float, float, float] = Field(
        default=(2.0, 2.0, 2.0), description="Voxel spacing (z, y, x) mm the volumes are resampled to."
    )
    roi_size: tuple[int, int, int] = Field(
        default=(32, 32, 32), description="Training patch and sliding-window size (z, y, x) voxels."
    )
    overlap: float = Field(default=0.25, ge=0, lt=1, description="Sliding-window overlap.")
    intensity: SegmentationIntensity = SegmentationIntensity.ZSCORE_NONZERO
    network: SegmentationNetwork = SegmentationNetwork.UNET
    channels: tuple[int, ...] = Field(
        default=(8, 16, 32, 64), description="UNet channels per level / SwinUNETR feature size (first)."
    )
    samples_per_volume: int = Field(default=4, ge=1, le=64, description="Patches drawn per volume and epoch.")
    pos_fraction: float = Field(
        default=0.67,
        ge=0,
        le=1,
        description="Share of patches centred on a structure voxel, split equally between the structures.",
    )
    sw_batch_size: int = Field(default=4, ge=1)

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2 or min(value) < 1:
            raise ValueError("channels needs at least two positive levels, e.g. [8, 16, 32]")
        return value

    @model_validator(mode="after")
    def _forms_a_spec(self) -> SegmentationConfig:
        # The spec's own rules (positive spacing, patch size, patch fits the network), once.
        try:
            self.spec({1: "structure"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(problems.replace("Value error, ", "")) from None
        return self

    def spec(self, labels: dict[int, str]) -> SegmentationSpec:
        """The model's spec for the dataset's structure labels (raises ValueError if inconsistent)."""
        return SegmentationSpec(
            labels=labels,
            spacing=self.spacing,
            roi_size=self.roi_size,
            overlap=self.overlap,
            intensity=self.intensity.value,
            network=self.network.value,
        )


class TrainConfig(StrictModel):
    task: TrainTask = Field(
        default=TrainTask.CLASSIFICATION, description="classification (2D) or segmentation (3D series)."
    )
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Name of this training recipe.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunSettings = Field(default_factory=RunSettings)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    segmentation: SegmentationConfig | None = Field(
        default=None, description="Required with task: segmentation, refused otherwise."
    )

    @model_validator(mode="after")
    def _task_sections(self) -> TrainConfig:
        if self.task is TrainTask.SEGMENTATION:
            if self.segmentation is None:
                raise ValueError("task: segmentation needs a segmentation: section (spacing, roi_size...)")
            if "network" in self.model.model_fields_set:
                raise ValueError(
                    "model.network names a 2D classifier; for segmentation set segmentation.network"
                )
            unused = {"spatial_size", "intensity"} & self.data.model_fields_set
            if unused:
                raise ValueError(
                    f"data.{sorted(unused)[0]} is for 2D classification; for segmentation use "
                    "segmentation.spacing, segmentation.roi_size and segmentation.intensity"
                )
            if "flip_prob" in self.data.augment.model_fields_set:
                raise ValueError(
                    "data.augment.flip_prob is not used for segmentation: flips would swap "
                    "left and right structures"
                )
        elif self.segmentation is not None:
            raise ValueError("a segmentation: section needs task: segmentation")
        return self


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{where}: {message}")
    return "invalid training config:\n  " + "\n  ".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.01", "run.workers=2"]``: values parsed as YAML scalars."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {override!r}")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def validate_config(data: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read, override and validate a training config."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    return validate_config(apply_overrides(data, list(overrides or [])))
