"""Dataset manifests: an immutable list of de-identified instances with labels, split and subgroups.

A manifest names instances only by de-identified identifiers (content hash, store key,
de-identified UIDs, patient pseudonym) and keeps only the subgroup attributes that the
de-identification profile retains. Its id is the SHA-256 of its canonical JSON, so the same
inputs always give the same id and any change gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from governance.strict import StrictModel

__all__ = [
    "SUBGROUP_ATTRIBUTES",
    "DatasetError",
    "DatasetManifest",
    "GroupBy",
    "ManifestItem",
    "SeriesItem",
    "Split",
    "Task",
    "parse_split",
]

SCHEMA = "radgate.dataset/1"
#: Instance attributes copied into the manifest for subgroup analysis (all non-identifying).
SUBGROUP_ATTRIBUTES = ("site", "manufacturer", "manufacturer_model", "sex", "age_band", "modality")


class DatasetError(ValueError):
    """A dataset cannot be created or found; the message says why (never with PHI)."""


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Task(StrEnum):
    """What a dataset version's labels are for."""

    CLASSIFICATION = "classification"  # one class per instance (``items``)
    SEGMENTATION = "segmentation"  # one label volume per series (``series``)


class GroupBy(StrEnum):
    """Unit kept whole across splits."""

    PATIENT = "patient"
    STUDY = "study"


def parse_split(text: str) -> dict[str, float]:
    """``"train=0.7,val=0.15,test=0.15"`` -> fractions (normalised to sum to 1)."""
    fractions: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            split, fraction = Split(name.strip()), float(value)
        except ValueError as exc:
            raise DatasetError(f"bad split {part!r}: expected train|val|test=FRACTION") from exc
        if not sep or fraction < 0:
            raise DatasetError(f"bad split {part!r}: expected train|val|test=FRACTION")
        fractions[str(split)] = fraction
    total = sum(fractions.values())
    if Split.TRAIN not in fractions or total <= 0:
        raise DatasetError("the split needs a positive train fraction")
    return {name: fraction / total for name, fraction in fractions.items()}


class ManifestItem(StrictModel):
    """One labelled, de-identified instance."""

    sha256: str = Field(min_length=64, max_length=64)
    store_key: str
    patient: str
    study: str
    sop_instance_uid: str
    label: int = Field(ge=0)
    split: Split
    attributes: dict[str, str] = Field(default_factory=dict)


class SeriesItem(StrictModel):
    """One de-identified series with its label volume (segmentation datasets).

    ``instances`` are the store keys of the slices in volume order; ``label_sha256`` is the
    store key of the label volume (gzipped NIfTI, uint8, on the series' (Z, Y, X) grid, aligned
    to the de-identified series); ``label_input_sha256`` is the hash of the file it came from.
    """

    series_uid: str
    study: str
    patient: str
    split: Split
    instances: list[str] = Field(min_length=1)
    label_sha256: str = Field(min_length=64, max_length=64)
    label_input_sha256: str = Field(min_length=64, max_length=64)
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    label_voxels: dict[str, int] = Field(default_factory=dict)  # label value -> voxel count
    attributes: dict[str, str] = Field(default_factory=dict)


class DatasetManifest(StrictModel):
    """The content of a dataset version; ``id`` is derived, never set."""

    schema_: str = Field(default=SCHEMA, alias="schema")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    label_names: list[str]
    split: dict[str, float]
    group_by: GroupBy = GroupBy.PATIENT
    seed: int = 0
    # True when the split came from the labels file's split column (``seed`` then unused); None
    # (not False) keeps the ids of manifests split by seed exactly as they were.
    split_from_labels: bool | None = None
    labels_sha256: str
    profiles: list[str] = Field(default_factory=list)
    items: list[ManifestItem]
    # Segmentation versions only. None (not a default value) keeps classification manifests,
    # and so their ids, exactly as they were before these fields existed.
    task: Task | None = None
    series: list[SeriesItem] | None = None

    @field_validator("items")
    @classmethod
    def _sorted_unique(cls, items: list[ManifestItem]) -> list[ManifestItem]:
        if len({i.sha256 for i in items}) != len(items):
            raise DatasetError("an instance appears twice in the manifest")
        return sorted(items, key=lambda i: i.sha256)

    @field_validator("series")
    @classmethod
    def _sorted_unique_series(cls, series: list[SeriesItem] | None) -> list[SeriesItem] | None:
        if series is None:
            return None
        if len({s.series_uid for s in series}) != len(series):
            raise DatasetError("a series appears twice in the manifest")
        return sorted(series, key=lambda s: s.series_uid)

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def kind(self) -> Task:
        return self.task or Task.CLASSIFICATION

    @property
    def label_map(self) -> dict[int, str]:
        """Label value -> name (for segmentation, 0 is the background)."""
        return dict(enumerate(self.label_names))

    def series_in(self, split: Split | str) -> list[SeriesItem]:
        return [s for s in self.series or [] if s.split == Split(split)]

    def without_patient(self, pseudonym: str) -> DatasetManifest:
        """The same manifest minus one patient's items and series (erasure)."""
        update: dict[str, Any] = {"items": [i for i in self.items if i.patient != pseudonym]}
        if self.series is not None:
            update["series"] = [s for s in self.series if s.patient != pseudonym]
        return self.model_copy(update=update)

    @property
    def size(self) -> int:
        """Labelled units: instances (classification) or series (segmentation)."""
        return len(self.series) if self.series is not None else len(self.items)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def items_in(self, split: Split | str) -> list[ManifestItem]:
        return [i for i in self.items if i.split == Split(split)]

    def summary(self) -> dict[str, Any]:
        """Counts per split and label, patients, and subgroup values: safe to print and log."""
        if self.series is not None:
            return self._series_summary()
        per_split: dict[str, dict[str, int]] = {}
        for item in self.items:
            counts = per_split.setdefault(str(item.split), {})
            label = self.label_names[item.label] if item.label < len(self.label_names) else str(item.label)
            counts[label] = counts.get(label, 0) + 1
        subgroups: dict[str, dict[str, int]] = {}
        for item in self.items:
            for key, value in item.attributes.items():
                subgroups.setdefault(key, {})
                subgroups[key][value] = subgroups[key].get(value, 0) + 1
        return {
            "name": self.name,
            "id": self.id,
            "instances": len(self.items),
            "patients": len({i.patient for i in self.items}),
            "studies": len({i.study for i in self.items}),
            "label_names": self.label_names,
            "splits": per_split,
            "subgroups": subgroups,
        }

    def _series_summary(self) -> dict[str, Any]:
        series = self.series or []
        per_split: dict[str, dict[str, int]] = {}
        subgroups: dict[str, dict[str, int]] = {}
        voxels: dict[str, int] = {}
        for s in series:
            counts = per_split.setdefault(str(s.split), {"series": 0})
            counts["series"] += 1
            for key, value in s.attributes.items():
                subgroups.setdefault(key, {})
                subgroups[key][value] = subgroups[key].get(value, 0) + 1
            for value, count in s.label_voxels.items():
                name = self.label_names[int(value)] if int(value) < len(self.label_names) else value
                voxels[name] = voxels.get(name, 0) + count
        return {
            "name": self.name,
            "id": self.id,
            "task": str(self.kind),
            "series": len(series),
            "instances": sum(len(s.instances) for s in series),
            "patients": len({s.patient for s in series}),
            "studies": len({s.study for s in series}),
            "label_names": self.label_names,
            "label_voxels": voxels,
            "splits": per_split,
            "subgroups": subgroups,
        }
