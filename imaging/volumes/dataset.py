"""Segmentation dataset versions: de-identified series with a label volume each.

``create_segmentation_dataset`` reads a labels CSV keyed like classification labels (original
or de-identified accession number, patient ID, study/series/SOP UID, sha256; see
``imaging.datasets.labels``) whose label column holds the path of a NIfTI or DICOM SEG label
volume (relative to the CSV). Each labelled series is assembled from the store (geometry
checked), its label volume aligned to the de-identified series' grid and stored, gzipped
NIfTI, in the content-addressed store; the manifest records both hashes, lineage records the
step, and patients are split as for classification. ``materialize_segmentation`` turns a
version into NIfTI files (cached by content) for MONAI.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from governance.catalog import Instance, LineageEvent, open_catalog
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.datasets.labels import read_labels
from imaging.datasets.manifest import DatasetError, DatasetManifest, GroupBy, SeriesItem, Split, Task
from imaging.datasets.service import (
    DatasetVersion,
    check_options,
    labelled_instances,
    split_from_labels,
    store_version,
    subgroup_attributes,
)
from imaging.datasets.split import assign_splits
from imaging.deid.pseudonym import Pseudonymizer
from imaging.store import ContentStore, StoreError, atomic_write
from imaging.volumes.assemble import assemble_series
from imaging.volumes.geometry import LabelAlignmentError, SeriesGeometryError, VolumeError
from imaging.volumes.labels import read_label_volume
from imaging.volumes.volume import nifti_bytes, write_nifti

__all__ = ["SegmentationCreateReport", "create_segmentation_dataset", "materialize_segmentation"]

_SOFTWARE = "radgate.volumes/1"


@dataclass(frozen=True)
class SegmentationCreateReport:
    """What ``create_segmentation_dataset`` did: counts and reasons only (keys and paths may be PHI)."""

    version: DatasetVersion
    created: bool
    matched_rows: int
    unmatched_rows: int
    series: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> series


def _label_files(labels_csv: Path, values: set[str]) -> dict[str, tuple[Path, str]]:
    """Label column value -> (file, sha256 of its bytes); a missing file is a clear error."""
    out = {}
    for value in sorted(values):
        path = Path(value)
        if not path.is_absolute():
            path = labels_csv.parent / path
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            raise DatasetError(
                f"a label volume named in the labels file cannot be read ({len(values)} named); "
                "paths are relative to the labels file"
            ) from None
        out[value] = (path, digest)
    return out


def _names(label_names: list[str] | None, max_label: int) -> list[str]:
    if label_names:
        if max_label >= len(label_names):
            raise DatasetError(
                f"label value {max_label} is out of range of the {len(label_names)} label names "
                "(the first name is the background, value 0)"
            )
        return list(label_names)
    return ["background", *(str(v) for v in range(1, max_label + 1))]


def create_segmentation_dataset(
    name: str,
    labels_csv: Path,
    *,
    split: Mapping[str, float] | None = None,
    group_by: GroupBy | str = GroupBy.PATIENT,
    seed: int = 0,
    label_names: list[str] | None = None,
    settings: Settings | None = None,
) -> SegmentationCreateReport:
    """Build, store (idempotent) and return a segmentation dataset version."""
    settings = settings or get_settings()
    fractions, group_by = check_options(split, group_by)
    labels_csv = Path(labels_csv)
    table = read_labels(labels_csv)
    files = _label_files(labels_csv, {label for _, label in table.rows})
    store = ContentStore.from_settings(settings)
    resolution, rows, _ = labelled_instances(table, settings)
    # A DICOM SEG made at the site references the original slices: their de-identified UIDs are
    # the keyed HMAC the de-identifier used.
    pseudonymizer = Pseudonymizer(load_project_key(settings))
    by_series: dict[str, list[Instance]] = {}
    for inst, _ in rows:
        by_series.setdefault(inst.series_instance_uid, []).append(inst)
    skipped: dict[str, int] = {}
    built: list[tuple[Instance, SeriesItem, str]] = []  # first instance, item (split unset), label file hash
    lineage: list[dict[str, Any]] = []
    max_label = 0
    for series_uid, members in sorted(by_series.items()):
        values = {resolution.labels[i.id] for i in members}
        if len(values) > 1:
            skipped["conflicting_labels"] = skipped.get("conflicting_labels", 0) + 1
            continue
        label_path, label_input_sha = files[values.pop()]
        by_sop = {i.sop_instance_uid: i for i in members}
        try:
            volume = assemble_series([store.path(i.store_key) for i in members])
            labels = read_label_volume(label_path, volume, source_uid_map=pseudonymizer.uid)
        except SeriesGeometryError as exc:
            reason = "geometry:" + ",".join(sorted(k.value for k in exc.report.kinds() if k))
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        except LabelAlignmentError:
            skipped["label_not_on_series_grid"] = skipped.get("label_not_on_series_grid", 0) + 1
            continue
        except VolumeError:
            skipped["label_unreadable"] = skipped.get("label_unreadable", 0) + 1
            continue
        label_sha = store.put(nifti_bytes(volume, labels))
        values_present, counts = np.unique(labels, return_counts=True)
        max_label = max(max_label, int(values_present.max()))
        first = by_sop[volume.sop_instance_uids[0]]
        item = SeriesItem(
            series_uid=series_uid,
            study=first.study_instance_uid,
            patient=first.patient_pseudonym,
            split=Split.TRAIN,  # set below, once all patients are known
            instances=[by_sop[uid].sha256 for uid in volume.sop_instance_uids],
            label_sha256=label_sha,
            label_input_sha256=label_input_sha,
            shape=volume.shape,
            spacing=volume.spacing,
            label_voxels={str(int(v)): int(c) for v, c in zip(values_present, counts, strict=True)},
            attributes=subgroup_attributes(first),
        )
        built.append((first, item, label_input_sha))
        lineage.append(
            {
                "step": "label_volume",
                "outcome": "aligned",
                "input_sha256": label_input_sha,
                "output_sha256": label_sha,
                "profile": first.profile,
                "key_id": first.key_id,
                "source": f"dataset:{name}",
                "software": _SOFTWARE,
                "details": {"slices": volume.shape[0], "shape": list(volume.shape), "labels": len(counts)},
            }
        )
    if not built:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(skipped.items()))
        raise DatasetError(f"no labelled series could be assembled with its label volume ({reasons})")
    names = _names(label_names, max_label)

    def group_of(item: SeriesItem) -> str:
        return item.patient if group_by is GroupBy.PATIENT else item.study

    if table.splits is None:
        assignment = assign_splits({group_of(item): 0 for _, item, _ in built}, fractions, seed)
    else:  # the labels file's split column, per series (its first instance's row), as given

        def group_of_instance(inst: Instance) -> str:
            return inst.patient_pseudonym if group_by is GroupBy.PATIENT else inst.study_instance_uid

        firsts = [(first, "") for first, _, _ in built]
        assignment, fractions = split_from_labels(firsts, resolution.splits, group_of_instance)
    series = [item.model_copy(update={"split": Split(assignment[group_of(item)])}) for _, item, _ in built]
    manifest = DatasetManifest(
        name=name,
        label_names=names,
        split=fractions,
        group_by=group_by,
        seed=seed,
        split_from_labels=True if table.splits is not None else None,
        labels_sha256=table.sha256,
        profiles=sorted({first.profile for first, _, _ in built}),
        items=[],
        task=Task.SEGMENTATION,
        series=series,
    )
    with open_catalog(settings).session() as session:
        known = set(
            session.execute(
                select(LineageEvent.output_sha256).where(
                    LineageEvent.step == "label_volume",
                    LineageEvent.output_sha256.in_([e["output_sha256"] for e in lineage]),
                )
            ).scalars()
        )
        session.add_all(LineageEvent(**e) for e in lineage if e["output_sha256"] not in known)
    version, created = store_version(manifest, settings)
    return SegmentationCreateReport(
        version=version,
        created=created,
        matched_rows=resolution.matched_rows,
        unmatched_rows=resolution.unmatched_rows,
        series=len(series),
        skipped=skipped,
    )


def materialize_segmentation(
    version: DatasetVersion,
    cache_dir: Path,
    *,
    split: Split | str | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """NIfTI files for MONAI, one row per series: ``{"image", "label", "split", "patient",
    "series_uid", "subgroups"}``. Image and label are (Z, Y, X) NIfTI on the same grid, cached
    under ``cache_dir`` by content (a second call reads nothing from the store). Label names:
    ``version.manifest.label_map``."""
    manifest = version.manifest
    if manifest.kind is not Task.SEGMENTATION:
        raise DatasetError(f"dataset {version.short_id} is not a segmentation dataset")
    store = ContentStore.from_settings(settings or get_settings())
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in manifest.series_in(split) if split is not None else manifest.series or []:
        image_key = hashlib.sha256("".join(item.instances).encode()).hexdigest()[:32]
        image_path = cache_dir / f"{image_key}.image.nii.gz"
        label_path = cache_dir / f"{item.label_sha256[:32]}.label.nii.gz"
        if not image_path.exists():
            paths = [store.path(key) for key in item.instances]
            if not all(p.exists() for p in paths):
                raise DatasetError(f"a slice of a series of dataset {version.short_id} is not in the store")
            try:
                volume = assemble_series(paths)
            except SeriesGeometryError as exc:
                raise DatasetError(
                    f"a series of dataset {version.short_id} no longer assembles: {exc}"
                ) from None
            if volume.shape != tuple(item.shape):
                raise DatasetError(f"a series of dataset {version.short_id} does not match its manifest")
            write_nifti(volume, image_path)
        if not label_path.exists():
            try:
                atomic_write(label_path, store.get(item.label_sha256), durable=False)
            except StoreError:
                raise DatasetError(
                    f"a label volume of dataset {version.short_id} is not in the store"
                ) from None
        rows.append(
            {
                "image": str(image_path),
                "label": str(label_path),
                "split": str(item.split),
                "patient": item.patient,
                "series_uid": item.series_uid,
                "subgroups": dict(item.attributes),
            }
        )
    return rows
