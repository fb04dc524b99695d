"""Label files: a CSV keyed by original or de-identified identifiers, resolved to catalog instances.

Originals (accession number, PatientID, StudyInstanceUID, SOPInstanceUID as a site exports
them) are turned into the keyed lookup the de-identifier recorded (``Pseudonymizer.lookup``)
and matched against the sealed pseudonym map; they are never stored or logged. De-identified
keys (study/SOP UID, patient pseudonym, content sha256) match the instances directly.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.catalog import Instance, Pseudonym
from governance.keys import ProjectKey
from imaging.datasets.manifest import DatasetError, Split
from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind

__all__ = ["KeyKind", "LabelTable", "read_labels", "resolve_labels"]


class KeyKind(StrEnum):
    """What a label file's key column holds."""

    ACCESSION = "accession_number"
    PATIENT = "patient_id"
    STUDY = "study_instance_uid"
    SERIES = "series_instance_uid"
    SOP = "sop_instance_uid"
    SHA256 = "sha256"


_COLUMN_ALIASES = {
    KeyKind.ACCESSION: ("accessionnumber", "accession", "accessionno"),
    KeyKind.PATIENT: ("patientid", "patient", "patientpseudonym", "mrn"),
    KeyKind.STUDY: ("studyinstanceuid", "studyuid", "study"),
    KeyKind.SERIES: ("seriesinstanceuid", "seriesuid", "series"),
    KeyKind.SOP: ("sopinstanceuid", "sopuid", "instanceuid"),
    KeyKind.SHA256: ("sha256", "contenthash", "instancesha256"),
}
_LABEL_ALIASES = ("label", "class", "target", "finding", "y")
#: An optional column naming each row's split (a site's or a public set's official split).
_SPLIT_ALIASES = ("split", "subset", "partition", "fold")
_SPLIT_VALUES = {
    "train": Split.TRAIN,
    "training": Split.TRAIN,
    "val": Split.VAL,
    "valid": Split.VAL,
    "validation": Split.VAL,
    "dev": Split.VAL,
    "test": Split.TEST,
    "testing": Split.TEST,
}


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


@dataclass
class LabelTable:
    """Parsed labels: key kind, (key, label value) rows and the file's hash (kept for provenance);
    ``splits``: each row's split when the file has a split column, else None."""

    kind: KeyKind
    rows: list[tuple[str, str]]
    sha256: str
    splits: list[Split] | None = None


@dataclass
class Resolution:
    """Labels attached to instances, and counts of what did not resolve (no values kept)."""

    labels: dict[int, str] = field(default_factory=dict)  # Instance.id -> label value
    splits: dict[int, Split] = field(default_factory=dict)  # Instance.id -> split (split column)
    matched_rows: int = 0
    unmatched_rows: int = 0
    conflicts: int = 0


def read_labels(path: Path) -> LabelTable:
    """Read a labels CSV; the key column is recognised by name (see :class:`KeyKind`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc.strerror}") from exc
    text = raw.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise DatasetError("the labels file is empty")
    columns = [_norm(h) for h in header]
    kind = key_index = None
    for candidate, aliases in _COLUMN_ALIASES.items():
        for index, column in enumerate(columns):
            if column in aliases:
                kind, key_index = candidate, index
                break
        if kind is not None:
            break
    if kind is None or key_index is None:
        raise DatasetError(
            "the labels file needs a key column named one of: " + ", ".join(k.value for k in KeyKind)
        )
    label_index = next((i for i, c in enumerate(columns) if c in _LABEL_ALIASES), None)
    if label_index is None:
        others = [i for i in range(len(columns)) if i != key_index]
        if len(others) != 1:
            raise DatasetError("the labels file needs a 'label' column")
        label_index = others[0]
    split_index = next((i for i, c in enumerate(columns) if c in _SPLIT_ALIASES), None)
    rows: list[tuple[str, str]] = []
    splits: list[Split] = []
    for line, record in enumerate(reader, start=2):
        if not record or all(not v.strip() for v in record):
            continue
        if len(record) <= max(key_index, label_index, -1 if split_index is None else split_index):
            raise DatasetError(f"labels file line {line}: missing columns")
        key, label = record[key_index].strip(), record[label_index].strip()
        if not key or not label:
            raise DatasetError(f"labels file line {line}: empty key or label")
        rows.append((key, label))
        if split_index is not None:
            named = _SPLIT_VALUES.get(record[split_index].strip().lower())
            if named is None:  # the value is not echoed: a mistyped column could hold identifiers
                raise DatasetError(f"labels file line {line}: the split must be train, val or test")
            splits.append(named)
    if not rows:
        raise DatasetError("the labels file has no rows")
    return LabelTable(
        kind=kind,
        rows=rows,
        sha256=hashlib.sha256(raw).hexdigest(),
        splits=splits if split_index is not None else None,
    )


_PSEUDONYM_KIND = {
    KeyKind.ACCESSION: PseudonymKind.ACCESSION,
    KeyKind.PATIENT: PseudonymKind.PATIENT_ID,
    KeyKind.STUDY: PseudonymKind.STUDY_UID,
    KeyKind.SERIES: PseudonymKind.SERIES_UID,
    KeyKind.SOP: PseudonymKind.SOP_UID,
}


def _instance_column(kind: KeyKind) -> Any:
    return {
        KeyKind.ACCESSION: Instance.study_instance_uid,  # an accession's pseudonym is the deid study UID
        KeyKind.PATIENT: Instance.patient_pseudonym,
        KeyKind.STUDY: Instance.study_instance_uid,
        KeyKind.SERIES: Instance.series_instance_uid,
        KeyKind.SOP: Instance.sop_instance_uid,
        KeyKind.SHA256: Instance.sha256,
    }[kind]


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def resolve_labels(session: Session, table: LabelTable, key: ProjectKey) -> Resolution:
    """Attach each row's label to the instances its key designates (original keys first)."""
    column = _instance_column(table.kind)
    # key value -> de-identified value in `column`
    deid_value: dict[str, str] = {}
    kind = _PSEUDONYM_KIND.get(table.kind)
    if kind is not None:
        pseudonymizer = Pseudonymizer(key)
        lookups = {pseudonymizer.lookup(kind, k): k for k, _ in table.rows}
        for chunk in _chunks(list(lookups)):
            rows = session.execute(
                select(Pseudonym.lookup, Pseudonym.pseudonym).where(
                    Pseudonym.kind == kind, Pseudonym.lookup.in_(chunk)
                )
            )
            for lookup, pseudonym in rows:
                deid_value[lookups[lookup]] = pseudonym
    for k, _ in table.rows:
        deid_value.setdefault(k, k)  # not an original we know: try it as a de-identified key
    resolution = Resolution()
    wanted = sorted(set(deid_value.values()))
    by_value: dict[str, list[int]] = {}
    for chunk in _chunks(wanted):
        for instance_id, value in session.execute(select(Instance.id, column).where(column.in_(chunk))):
            by_value.setdefault(value, []).append(instance_id)
    for row, (k, label) in enumerate(table.rows):
        ids = by_value.get(deid_value[k], [])
        if not ids:
            resolution.unmatched_rows += 1
            continue
        resolution.matched_rows += 1
        for instance_id in ids:
            previous = resolution.labels.setdefault(instance_id, label)
            if previous != label:
                resolution.conflicts += 1
            if table.splits is not None:
                split = resolution.splits.setdefault(instance_id, table.splits[row])
                if split is not table.splits[row]:
                    resolution.conflicts += 1
    return resolution
