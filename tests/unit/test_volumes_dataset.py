"""Anatomy demo series (real ch2/AAL anatomy, PHI headers) -> ingest -> segmentation dataset
version -> NIfTI rows for MONAI, with labels aligned to the de-identified series."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from governance.catalog import LineageEvent, open_catalog
from governance.settings import get_settings
from imaging.datasets import DatasetError, Task, create_dataset, get_dataset
from imaging.volumes import (
    ANATOMY_LABEL_NAMES,
    AnatomySet,
    assemble_series,
    catalog_series,
    create_segmentation_dataset,
    load_stored_series,
    materialize_segmentation,
    read_label_volume,
    stored_series,
    write_anatomy_set,
    zyx_ras_affine,
)
from imaging.volumes.anatomy import TEMPLATES_DIR

pytestmark = pytest.mark.skipif(
    not (TEMPLATES_DIR / "ch2.nii.gz").exists(), reason="mricron-data is not installed"
)


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory: pytest.TempPathFactory) -> AnatomySet:
    return write_anatomy_set(tmp_path_factory.mktemp("anatomy"), subjects=4, seed=3, spacing=5.0)


def test_anatomy_series_carry_phi_and_aligned_labels(anatomy: AnatomySet) -> None:
    assert len(anatomy.subjects) == 4 and anatomy.label_names[0] == "background"
    masks = []
    for subject in anatomy.subjects:
        ds = pydicom.dcmread(subject.files[0])
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.PatientName == subject.patient_name and ds.PatientID == subject.patient_id
        assert ds.AccessionNumber == subject.accession_number and ds.InstitutionName == subject.site
        assert ds.PatientBirthDate and ds.StudyDate
        volume = assemble_series(reversed(subject.files))
        assert volume.geometry.ok and volume.spacing == pytest.approx((5.0, 5.0, 5.0))
        labels = read_label_volume(subject.label_path, volume)  # an (X, Y, Z) RAS NIfTI
        counts = np.bincount(labels.ravel(), minlength=4)
        assert counts.size == len(ANATOMY_LABEL_NAMES) and all(counts[1:] > 20)
        # the cerebellum lies below the deep grey nuclei, the occipital lobe behind them (LPS: +z up, +y back)
        centre = {k: np.argwhere(labels == k).mean(axis=0) for k in (1, 2, 3)}  # (z, y, x)
        assert centre[1][0] < centre[2][0] and centre[3][1] > centre[2][1]
        masks.append(labels)
    assert len({m.tobytes() for m in masks}) == 4  # every subject deformed differently
    assert len({s.site for s in anatomy.subjects}) > 1 and {s.sex for s in anatomy.subjects} <= {"F", "M"}


def test_anatomy_labels_are_warped_with_the_image() -> None:
    """The subject's label map lies where its image shows the structures: an image that IS the
    label mask (structures bright) comes out bright exactly inside the warped labels. Warping
    image and labels in two ``Rand3DElastic`` calls gave them different affine parts (Dice
    0.40-0.69 here), which capped the demo's Dice near 0.6."""
    from imaging.volumes.anatomy import _SCANNERS, _load_templates, _subject_arrays

    _, labels, _ = _load_templates(5.0)
    image = np.where(labels > 0, 1.0, 0.05).astype(np.float32)
    for seed in range(4):
        warped, warped_labels = _subject_arrays(image, labels, seed, _SCANNERS[2])
        bright, inside = warped > 400, warped_labels > 0
        dice = 2 * np.sum(bright & inside) / (np.sum(bright) + np.sum(inside))
        assert dice > 0.85, (seed, dice)
        assert not np.array_equal(warped_labels, labels)  # still deformed


def test_segmentation_dataset_from_deidentified_series(anatomy: AnatomySet, tmp_path: Path) -> None:
    from imaging.ingest import Ingestor, IngestStatus

    ingestor = Ingestor()
    assert {ingestor.ingest_path(p).status for p in anatomy.files} == {IngestStatus.DEIDENTIFIED}
    report = create_segmentation_dataset("brain", anatomy.labels_csv, label_names=anatomy.label_names)
    version = report.version
    manifest = version.manifest
    assert report.created and report.series == 4 and report.skipped == {} and report.unmatched_rows == 0
    assert manifest.kind is Task.SEGMENTATION and manifest.label_map == ANATOMY_LABEL_NAMES
    text = manifest.canonical_json()
    for s in anatomy.subjects:  # no original identifier reaches the manifest
        for original in (
            s.accession_number,
            s.patient_id,
            s.series_instance_uid,
            s.volume.study_instance_uid,
        ):
            assert original not in text
    assert len({(s.patient, s.split) for s in manifest.series or []}) == len(
        {s.patient for s in manifest.series or []}
    )
    assert get_dataset("brain").id == version.id
    again = create_segmentation_dataset("brain", anatomy.labels_csv, label_names=anatomy.label_names)
    assert not again.created and again.version.id == version.id
    with open_catalog().session() as session:
        events = (
            session.execute(select(LineageEvent).where(LineageEvent.step == "label_volume")).scalars().all()
        )
        assert {e.output_sha256 for e in events} == {s.label_sha256 for s in manifest.series or []}

    # the catalog's view: four MR series, each assembling to its manifest grid
    assert sorted(catalog_series(modality="MR")) == sorted(s.series_uid for s in manifest.series or [])
    first = (manifest.series or [])[0]
    assert load_stored_series(first.series_uid).shape == first.shape
    assert stored_series("2.25.0") == []

    rows = materialize_segmentation(version, tmp_path / "cache")
    assert len(rows) == 4 and {r["split"] for r in rows} <= {"train", "val", "test"}
    matched = set()
    for row in rows:
        image, label = _nifti(row["image"]), _nifti(row["label"])
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        assert np.allclose(np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0)), 5.0)  # (z, y, x) pixdim
        assert set(row["subgroups"]) >= {"site", "manufacturer", "sex", "age_band"}
        ds = pydicom.dcmread(_store_files(version, row["series_uid"])[0])
        assert ds.PatientIdentityRemoved == "YES" and ds.SeriesInstanceUID == row["series_uid"]
        assert str(ds.PatientName) not in {s.patient_name for s in anatomy.subjects}
        assert ds.get("AccessionNumber", "") not in {s.accession_number for s in anatomy.subjects}
        assert "InstitutionName" not in ds or ds.InstitutionName not in {s.site for s in anatomy.subjects}
        # same place in the scanner (table offsets differ per subject): the subject it came from
        subject = next(s for s in anatomy.subjects if np.allclose(zyx_ras_affine(s.volume), image.affine))
        matched.add(subject.accession_number)
        labels = read_label_volume(subject.label_path, subject.volume)
        np.testing.assert_array_equal(np.asarray(label.dataobj), labels)  # aligned to the de-id series
        np.testing.assert_allclose(np.asarray(image.dataobj), subject.volume.array)
    assert len(matched) == 4
    assert materialize_segmentation(version, tmp_path / "cache", split="train") == [
        r for r in rows if r["split"] == "train"
    ]
    # erasure finds the patient's series and derived label volume; the successor drops them
    from governance.keys import load_project_key
    from imaging.compliance.erasure_find import find_patient_data

    subject = anatomy.subjects[0]
    with open_catalog().session() as session:
        plan = find_patient_data(session, load_project_key(), subject.patient_id, get_settings())
    mine = [s for s in manifest.series or [] if s.patient == plan.pseudonym]
    assert len(mine) == 1 and plan.label_volumes == [mine[0].label_sha256]
    assert [d["id"] for d in plan.datasets] == [version.id] and plan.datasets[0]["items"] == 1
    successor = manifest.without_patient(plan.pseudonym)
    assert successor.size == 3 and successor.id != version.id and successor.kind is Task.SEGMENTATION
    with pytest.raises(DatasetError, match="not a segmentation"):
        classification = create_dataset("cls", _relabel(anatomy, tmp_path, "1")).version
        materialize_segmentation(classification, tmp_path / "c2")

    # A split column in the labels file is the split, per series, as given.
    lines = list(csv.reader(anatomy.labels_csv.open()))
    chosen = {row[0]: ("train", "test")[i % 2] for i, row in enumerate(lines[1:])}
    sited = anatomy.labels_csv.with_name("labels-with-split.csv")
    with sited.open("w", newline="") as handle:
        csv.writer(handle).writerows([[*lines[0], "split"], *([*r, chosen[r[0]]] for r in lines[1:])])
    given = create_segmentation_dataset(
        "brain-sited", sited, label_names=anatomy.label_names
    ).version.manifest
    assert given.split_from_labels and given.split == {"train": 0.5, "test": 0.5}
    by_series = {s.volume.series_instance_uid: chosen[s.accession_number] for s in anatomy.subjects}
    from governance.keys import load_project_key
    from imaging.deid.pseudonym import Pseudonymizer

    pseudonym = Pseudonymizer(load_project_key())
    assert {str(s.split) for s in given.series or []} == {"train", "test"}
    for item in given.series or []:
        original = next(uid for uid in by_series if pseudonym.uid(uid) == item.series_uid)
        assert str(item.split) == by_series[original]


def test_segmentation_dataset_errors_name_no_phi(anatomy: AnatomySet, tmp_path: Path) -> None:
    from imaging.ingest import Ingestor

    ingestor = Ingestor()
    for path in anatomy.subjects[0].files:
        ingestor.ingest_path(path)
    subject = anatomy.subjects[0]
    with pytest.raises(DatasetError, match="out of range"):
        create_segmentation_dataset("b", anatomy.labels_csv, label_names=["background", "cerebellum"])
    with pytest.raises(DatasetError, match="cannot be read") as caught:
        create_segmentation_dataset("b", _relabel(anatomy, tmp_path, "labels/missing.nii.gz"))
    assert subject.accession_number not in str(caught.value)
    # a label map of another subject (other grid) is not silently resampled
    other = next(
        s
        for s in anatomy.subjects
        if s.volume.shape != subject.volume.shape or s.volume.origin != subject.volume.origin
    )
    shutil.copy(other.label_path, tmp_path / "wrong.nii.gz")
    with pytest.raises(DatasetError, match="label_not_on_series_grid") as caught:
        create_segmentation_dataset(
            "b", _relabel(anatomy, tmp_path, str(tmp_path / "wrong.nii.gz"), only=subject)
        )
    assert subject.accession_number not in str(caught.value) and "wrong" not in str(caught.value)


def _relabel(anatomy: AnatomySet, folder: Path, label: str, only: object = None) -> Path:
    path = folder / "relabel.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "label"])
        for s in anatomy.subjects:
            if only is None or s is only:
                writer.writerow([s.accession_number, label])
    return path


def _nifti(path: str) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def _store_files(version: object, series_uid: str) -> list[Path]:
    from imaging.store import ContentStore

    store = ContentStore.from_settings()
    item = next(s for s in version.manifest.series if s.series_uid == series_uid)  # type: ignore[attr-defined]
    return [store.path(key) for key in item.instances]


def test_dicom_seg_made_over_the_original_series_labels_its_deidentified_copy(
    anatomy: AnatomySet, tmp_path: Path
) -> None:
    from imaging.ingest import Ingestor
    from imaging.results import AlgorithmIdentity, build_segmentation

    subject = anatomy.subjects[1]
    ingestor = Ingestor()
    for path in subject.files:
        ingestor.ingest_path(path)
    sources = [pydicom.dcmread(p) for p in subject.files]
    labels = read_label_volume(subject.label_path, subject.volume)
    structures = {k: v for k, v in ANATOMY_LABEL_NAMES.items() if k}
    seg = build_segmentation(sources, labels, structures, AlgorithmIdentity("site-tool", "1", "manual"))
    seg.save_as(tmp_path / "seg.dcm")
    # on the original series directly
    np.testing.assert_array_equal(read_label_volume(tmp_path / "seg.dcm", subject.volume), labels)
    # as a dataset label: aligned to the de-identified series through the keyed UID pseudonym
    version = create_segmentation_dataset(
        "seg-labels", _relabel(anatomy, tmp_path, str(tmp_path / "seg.dcm"), only=subject)
    ).version
    (item,) = version.manifest.series or []
    assert item.series_uid != subject.series_instance_uid and item.label_voxels["2"] == int(
        (labels == 2).sum()
    )
    (row,) = materialize_segmentation(version, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(_nifti(row["label"]).dataobj), labels)
