"""Dataset versions: keyed label mapping, patient-level splits, content-derived ids, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest

from imaging.datasets import (
    DatasetError,
    Split,
    create_dataset,
    get_dataset,
    list_datasets,
    materialize,
    parse_split,
)
from imaging.datasets.split import assign_splits
from imaging.demo_data import DemoSet, write_demo_studies


@pytest.fixture
def ingested(tmp_path: Path) -> DemoSet:
    from imaging.ingest import Ingestor, IngestStatus

    demo = write_demo_studies(tmp_path / "in", patients=10, images_per_patient=2, seed=4, size=16)
    ingestor = Ingestor()
    for path in demo.files:
        assert ingestor.ingest_path(path).status is IngestStatus.DEIDENTIFIED
    return demo


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_original_accession_keys_map_to_deidentified_instances(ingested: DemoSet, tmp_path: Path) -> None:
    report = create_dataset("demo", ingested.labels_csv, label_names=["no_finding", "opacity"])
    version = report.version
    assert report.created and report.matched_rows == 20 and report.unmatched_rows == 0
    assert len(version.id) == 64 and version.manifest.id == version.id
    manifest_json = version.manifest.canonical_json()
    for study in ingested.studies:  # no original identifier is kept
        assert study.accession_number not in manifest_json
        assert study.patient_id not in manifest_json
        assert study.study_instance_uid not in manifest_json
    by_label = {s.label for s in ingested.studies}
    assert {i.label for i in version.manifest.items} == by_label
    item = version.manifest.items[0]
    assert set(item.attributes) >= {"site", "manufacturer", "sex", "age_band"}
    assert item.attributes["site"].startswith("SITE-")  # keyed pseudonym, not the institution name
    # Same inputs -> same id, stored once.
    again = create_dataset("demo", ingested.labels_csv, label_names=["no_finding", "opacity"])
    assert not again.created and again.version.id == version.id
    assert [r["id"] for r in list_datasets()] == [version.id]


def test_split_is_patient_level_and_rows_resolve_to_store(ingested: DemoSet) -> None:
    version = create_dataset(
        "demo", ingested.labels_csv, split=parse_split("train=0.6,val=0.2,test=0.2")
    ).version
    patients_in: dict[str, set[str]] = {}
    for item in version.manifest.items:
        patients_in.setdefault(item.patient, set()).add(str(item.split))
    assert all(len(splits) == 1 for splits in patients_in.values())
    assert {str(i.split) for i in version.manifest.items} == {"train", "val", "test"}
    rows = materialize(version, Split.TEST)
    assert rows and all(Path(r["image"]).exists() for r in rows)
    ds = pydicom.dcmread(rows[0]["image"])
    assert ds.PatientIdentityRemoved == "YES"


def test_deidentified_keys_are_accepted_and_labels_change_the_id(ingested: DemoSet, tmp_path: Path) -> None:
    original = create_dataset("demo", ingested.labels_csv).version
    by_study = {i.study: i.label for i in original.manifest.items}
    deid_csv = _write(
        tmp_path / "deid.csv", ["study_instance_uid", "label"], [[k, str(v)] for k, v in by_study.items()]
    )
    same = create_dataset("demo", deid_csv).version
    assert {i.sha256: i.label for i in same.manifest.items} == {
        i.sha256: i.label for i in original.manifest.items
    }
    flipped = _write(
        tmp_path / "flip.csv", ["study_instance_uid", "label"], [[k, str(1 - v)] for k, v in by_study.items()]
    )
    assert create_dataset("demo", flipped).version.id != original.id


def test_patient_id_keys_label_every_study_of_the_patient(ingested: DemoSet, tmp_path: Path) -> None:
    patients = sorted({s.patient_id for s in ingested.studies})
    labels = _write(
        tmp_path / "p.csv", ["PatientID", "label"], [[p, str(i % 2)] for i, p in enumerate(patients)]
    )
    version = create_dataset("by-patient", labels).version
    assert len(version.manifest.items) == 20
    per_patient: dict[str, set[int]] = {}
    for item in version.manifest.items:
        per_patient.setdefault(item.patient, set()).add(item.label)
    assert all(len(v) == 1 for v in per_patient.values())


def test_references_and_errors(ingested: DemoSet, tmp_path: Path) -> None:
    version = create_dataset("demo", ingested.labels_csv).version
    assert get_dataset("demo").id == version.id
    assert get_dataset(version.id[:10]).id == version.id
    assert get_dataset(f"demo@{version.id[:8]}").id == version.id
    with pytest.raises(DatasetError, match="no dataset version"):
        get_dataset("nope")
    unknown = _write(tmp_path / "u.csv", ["accession_number", "label"], [["NOT-AN-ACCESSION", "1"]])
    with pytest.raises(DatasetError, match="none of the 1 label rows matched"):
        create_dataset("x", unknown)
    with pytest.raises(DatasetError, match="key column"):
        create_dataset("x", _write(tmp_path / "k.csv", ["foo", "bar", "baz"], [["1", "2", "3"]]))
    with pytest.raises(DatasetError, match="cannot read"):
        create_dataset("x", tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="bad split"):
        parse_split("train=0.5,holdout=0.5")


def test_assign_splits_is_stable_and_stratified() -> None:
    groups = {f"p{i}": i % 2 for i in range(40)}
    first = assign_splits(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    reordered = assign_splits(
        dict(reversed(list(groups.items()))), {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1
    )
    assert first == reordered
    for split in ("train", "val", "test"):
        assert {groups[g] for g, s in first.items() if s == split} == {0, 1}
    assert sum(s == "train" for s in first.values()) == 28


def test_a_split_column_in_the_labels_file_is_the_split(ingested: DemoSet, tmp_path: Path) -> None:
    """A site's (or a public set's) own split: kept as given, whatever the pseudonym key, so the
    same export gives the same split on every installation."""
    patients = sorted({s.patient_id for s in ingested.studies})
    chosen = {p: ("train", "val", "test")[i % 3] for i, p in enumerate(patients)}
    rows = [[s.accession_number, str(s.label), chosen[s.patient_id]] for s in ingested.studies]
    labels = _write(tmp_path / "split.csv", ["accession_number", "label", "split"], rows)
    version = create_dataset("sited", labels).version
    manifest = version.manifest
    assert manifest.split_from_labels is True
    by_patient = {s.patient_id: s for s in ingested.studies}
    from governance.keys import load_project_key
    from imaging.deid.pseudonym import Pseudonymizer

    pseudonym = Pseudonymizer(load_project_key())
    wanted = {pseudonym.uid(s.study_instance_uid): chosen[s.patient_id] for s in by_patient.values()}
    got = {i.study: str(i.split) for i in manifest.items}
    assert all(got[study] == split for study, split in wanted.items() if study in got)
    counts = {
        name: sum(1 for i in manifest.items if str(i.split) == name) for name in ("train", "val", "test")
    }
    assert manifest.split == {name: round(n / len(manifest.items), 4) for name, n in counts.items()}
    # A seeded split of the same file without the column is another version.
    plain = _write(tmp_path / "plain.csv", ["accession_number", "label"], [r[:2] for r in rows])
    assert create_dataset("sited", plain).version.id != version.id


def test_a_split_column_that_leaks_a_patient_or_is_mistyped_is_refused(
    ingested: DemoSet, tmp_path: Path
) -> None:
    first, second = (s for s in ingested.studies if s.patient_id == ingested.studies[0].patient_id)
    rows = [[s.accession_number, str(s.label), "train"] for s in ingested.studies]
    rows[ingested.studies.index(second)][2] = "test"  # the patient's second study in another split
    leaking = _write(tmp_path / "leak.csv", ["accession_number", "label", "split"], rows)
    with pytest.raises(DatasetError, match="1 patient/study group"):
        create_dataset("sited", leaking)
    rows[ingested.studies.index(second)][2] = first.patient_id  # an identifier where a split belongs
    typo = _write(tmp_path / "typo.csv", ["accession_number", "label", "split"], rows)
    with pytest.raises(DatasetError) as caught:
        create_dataset("sited", typo)
    assert "train, val or test" in str(caught.value) and first.patient_id not in str(caught.value)
