"""Create, list, find and materialise dataset versions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from governance.catalog import Instance, open_catalog
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.datasets.labels import LabelTable, Resolution, read_labels, resolve_labels
from imaging.datasets.manifest import (
    SUBGROUP_ATTRIBUTES,
    DatasetError,
    DatasetManifest,
    GroupBy,
    ManifestItem,
    Split,
)
from imaging.datasets.models import DatasetVersionRecord
from imaging.datasets.split import assign_splits

__all__ = [
    "DEFAULT_SPLIT",
    "CreateReport",
    "DatasetVersion",
    "check_options",
    "create_dataset",
    "get_dataset",
    "labelled_instances",
    "list_datasets",
    "materialize",
    "store_version",
    "subgroup_attributes",
]

DEFAULT_SPLIT = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass(frozen=True)
class DatasetVersion:
    """A stored dataset version."""

    id: str
    name: str
    created_at: datetime
    manifest: DatasetManifest

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class CreateReport:
    """What ``create_dataset`` did: counts only (label keys may be PHI)."""

    version: DatasetVersion
    created: bool
    matched_rows: int
    unmatched_rows: int
    unlabelled_instances: int


def _label_names(values: set[str], label_names: list[str] | None) -> tuple[list[str], dict[str, int]]:
    if label_names:
        index = {name: i for i, name in enumerate(label_names)}
        if all(v.isdigit() for v in values):
            if max(int(v) for v in values) >= len(label_names):
                raise DatasetError("a numeric label is out of range of --label-names")
            return list(label_names), {v: int(v) for v in values}
        unknown = values - set(index)
        if unknown:
            raise DatasetError(f"{len(unknown)} label value(s) are not in --label-names")
        return list(label_names), {v: index[v] for v in values}
    if all(v.lstrip("-").isdigit() for v in values):
        numbers = sorted({int(v) for v in values})
        if numbers[0] < 0:
            raise DatasetError("numeric labels must be 0, 1, ...")
        return [str(n) for n in range(numbers[-1] + 1)], {v: int(v) for v in values}
    names = sorted(values)
    return names, {v: i for i, v in enumerate(names)}


def check_options(
    split: Mapping[str, float] | None, group_by: GroupBy | str
) -> tuple[dict[str, float], GroupBy]:
    """Validated split fractions (default :data:`DEFAULT_SPLIT`) and grouping unit."""
    fractions = dict(split or DEFAULT_SPLIT)
    unknown = [name for name in fractions if name not in {s.value for s in Split}]
    if unknown or fractions.get(Split.TRAIN, 0) <= 0:
        raise DatasetError("the split needs train (and optionally val, test) with a positive train fraction")
    try:
        return fractions, GroupBy(group_by)
    except ValueError:
        raise DatasetError("--group-by must be patient or study") from None


def labelled_instances(
    table: LabelTable, settings: Settings
) -> tuple[Resolution, list[tuple[Instance, str]], int]:
    """The instances the label rows designate, each with its label value, and the number of
    instances in the catalog. Refuses conflicting rows and a file that matches nothing."""
    with open_catalog(settings).session() as session:
        resolution = resolve_labels(session, table, load_project_key(settings))
        if resolution.conflicts:
            raise DatasetError(
                f"{resolution.conflicts} instance(s) get different labels or splits from different rows"
            )
        if not resolution.labels:
            raise DatasetError(
                f"none of the {len(table.rows)} label rows matched an ingested instance "
                f"(key column: {table.kind.value}); ingest the images first"
            )
        instances = session.execute(
            select(Instance).where(Instance.id.in_(list(resolution.labels)))
        ).scalars()
        rows = [(inst, resolution.labels[inst.id]) for inst in instances]
        total_instances = session.query(Instance).count()
    return resolution, rows, total_instances


def create_dataset(
    name: str,
    labels_csv: Path,
    *,
    split: Mapping[str, float] | None = None,
    group_by: GroupBy | str = GroupBy.PATIENT,
    seed: int = 0,
    label_names: list[str] | None = None,
    settings: Settings | None = None,
) -> CreateReport:
    """Build the manifest from the catalog and the labels file, store it (idempotent) and return it."""
    settings = settings or get_settings()
    fractions, group_by = check_options(split, group_by)
    table = read_labels(labels_csv)
    resolution, rows, total_instances = labelled_instances(table, settings)
    names, index = _label_names({label for _, label in rows}, label_names)

    def group_of(inst: Instance) -> str:
        return inst.patient_pseudonym if group_by is GroupBy.PATIENT else inst.study_instance_uid

    group_labels: dict[str, int] = {}
    for inst, label in rows:
        group = group_of(inst)
        group_labels[group] = max(group_labels.get(group, 0), index[label])
    if table.splits is None:
        assignment = assign_splits(group_labels, fractions, seed)
    else:  # the file's own split: kept as given, refused if it puts a group in two splits
        assignment, fractions = split_from_labels(rows, resolution.splits, group_of)
    items = [
        ManifestItem(
            sha256=inst.sha256,
            store_key=inst.store_key,
            patient=inst.patient_pseudonym,
            study=inst.study_instance_uid,
            sop_instance_uid=inst.sop_instance_uid,
            label=index[label],
            split=Split(assignment[group_of(inst)]),
            attributes=subgroup_attributes(inst),
        )
        for inst, label in rows
    ]
    manifest = DatasetManifest(
        name=name,
        label_names=names,
        split=fractions,
        group_by=group_by,
        seed=seed,
        split_from_labels=True if table.splits is not None else None,
        labels_sha256=table.sha256,
        profiles=sorted({inst.profile for inst, _ in rows}),
        items=items,
    )
    version, created = store_version(manifest, settings)
    return CreateReport(
        version=version,
        created=created,
        matched_rows=resolution.matched_rows,
        unmatched_rows=resolution.unmatched_rows,
        unlabelled_instances=total_instances - len(items),
    )


def split_from_labels(
    rows: list[tuple[Instance, str]], splits: Mapping[int, Split], group_of: Callable[[Instance], str]
) -> tuple[dict[str, str], dict[str, float]]:
    """Group -> split as the labels file's split column gives it, and the fractions it amounts
    to. A group (patient or study) whose instances the file puts in two splits is refused: its
    images would leak between training and evaluation."""
    assignment: dict[str, str] = {}
    leaking: set[str] = set()
    for inst, _ in rows:
        split = splits[inst.id].value
        if assignment.setdefault(group_of(inst), split) != split:
            leaking.add(group_of(inst))
    if leaking:
        raise DatasetError(f"the labels file puts {len(leaking)} patient/study group(s) in two splits")
    if Split.TRAIN.value not in assignment.values():
        raise DatasetError("the labels file's split column names no train row")
    counts = {s.value: sum(1 for inst, _ in rows if splits[inst.id] is s) for s in Split}
    fractions = {name: round(n / len(rows), 4) for name, n in counts.items() if n}
    return assignment, fractions


def subgroup_attributes(inst: Instance) -> dict[str, str]:
    """The non-identifying attributes of an instance kept in manifests for subgroup analysis."""
    return {
        k: str((inst.attributes or {}).get(k, inst.modality if k == "modality" else "unknown"))
        for k in SUBGROUP_ATTRIBUTES
    }


def store_version(manifest: DatasetManifest, settings: Settings | None = None) -> tuple[DatasetVersion, bool]:
    """Record a manifest as a dataset version (idempotent): the version and whether it is new."""
    version_id = manifest.id
    created = False
    with open_catalog(settings or get_settings()).session() as session:
        record = session.get(DatasetVersionRecord, version_id)
        if record is None:
            summary = manifest.summary()
            record = DatasetVersionRecord(
                id=version_id,
                name=manifest.name,
                instances=summary["instances"],
                patients=summary["patients"],
                summary=summary,
                manifest_json=manifest.canonical_json(),
            )
            session.add(record)
            session.flush()
            created = True
        version = _version(record)
    return version, created


def _version(record: DatasetVersionRecord) -> DatasetVersion:
    manifest = DatasetManifest.model_validate_json(record.manifest_json)
    if manifest.id != record.id:
        raise DatasetError(f"dataset version {record.id[:12]} does not match its manifest hash")
    return DatasetVersion(id=record.id, name=record.name, created_at=record.created_at, manifest=manifest)


def list_datasets(settings: Settings | None = None) -> list[dict[str, Any]]:
    """All versions, newest first, as summary rows (no manifests)."""
    with open_catalog(settings or get_settings()).session() as session:
        records = session.execute(
            select(
                DatasetVersionRecord.id,
                DatasetVersionRecord.name,
                DatasetVersionRecord.instances,
                DatasetVersionRecord.patients,
                DatasetVersionRecord.created_at,
            ).order_by(DatasetVersionRecord.created_at.desc())
        ).all()
    return [
        {
            "id": r.id,
            "name": r.name,
            "instances": r.instances,
            "patients": r.patients,
            "created_at": r.created_at,
        }
        for r in records
    ]


def get_dataset(ref: str, settings: Settings | None = None) -> DatasetVersion:
    """A version by full id, unique id prefix (8+ hex), ``NAME`` (newest) or ``NAME@IDPREFIX``."""
    ref = ref.strip()
    name, _, prefix = ref.partition("@")
    with open_catalog(settings or get_settings()).session() as session:
        query = select(DatasetVersionRecord)
        if prefix:
            query = query.where(DatasetVersionRecord.name == name, DatasetVersionRecord.id.startswith(prefix))
            records = list(session.execute(query).scalars())
        else:
            records = list(session.execute(query.where(DatasetVersionRecord.id == ref)).scalars())
            if not records and len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
                records = list(
                    session.execute(query.where(DatasetVersionRecord.id.startswith(ref))).scalars()
                )
            if not records:
                records = list(
                    session.execute(
                        query.where(DatasetVersionRecord.name == ref)
                        .order_by(DatasetVersionRecord.created_at.desc())
                        .limit(1)
                    ).scalars()
                )
        if not records:
            raise DatasetError(f"no dataset version {ref!r}: see `radgate dataset list`")
        if len(records) > 1:
            raise DatasetError(f"dataset reference {ref!r} is ambiguous: give more of the id")
        return _version(records[0])


def materialize(
    version: DatasetVersion, split: Split | str | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Rows for MONAI datasets: ``{"image": local path, "label": int, "sha256", "patient", "split",
    **attributes}``. Raises :class:`DatasetError` when an object is missing from the store."""
    from imaging.store import ContentStore

    store = ContentStore.from_settings(settings or get_settings())
    items = version.manifest.items if split is None else version.manifest.items_in(split)
    rows = []
    for item in items:
        path = store.path(item.store_key)
        if not path.exists():
            raise DatasetError(
                f"instance {item.sha256[:12]} of dataset {version.short_id} is not in the store"
            )
        rows.append(
            {
                "image": str(path),
                "label": item.label,
                "sha256": item.sha256,
                "patient": item.patient,
                "split": str(item.split),
                **item.attributes,
            }
        )
    return rows
