"""The classification demo's data: real anatomy (mricron ch2), a lesion in about half, masks and
labels kept by the site, PHI-bearing headers, deterministic."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from imaging.demo_lesions import read_lesion_set, read_mask, write_lesion_studies
from imaging.volumes.anatomy import TEMPLATES_DIR

pytestmark = pytest.mark.skipif(
    not (TEMPLATES_DIR / "ch2bet.nii.gz").exists(), reason="mricron-data is not installed"
)


def test_studies_labels_masks_and_headers(tmp_path: Path) -> None:
    lesions = write_lesion_studies(tmp_path / "a", studies=12, seed=3, size=64)
    assert len(lesions.studies) == 12 and lesions.prevalence == 0.5
    labels = dict(line.split(",") for line in lesions.labels_csv.read_text().splitlines()[1:])
    assert {k: int(v) for k, v in labels.items()} == {s.accession_number: s.label for s in lesions.studies}
    for study in lesions.studies:
        ds = pydicom.dcmread(study.path)
        assert ds.Modality == "MR" and (ds.Rows, ds.Columns) == (64, 64)
        assert ds.AccessionNumber == study.accession_number and ds.PatientID == study.patient_id
        assert str(ds.PatientName) and ds.InstitutionName and ds.PatientBirthDate  # PHI to remove
        if study.label:
            mask = read_mask(study.mask_path)  # type: ignore[arg-type]
            assert mask.shape == (64, 64) and mask.sum() == study.lesion_pixels > 0
            pixels = ds.pixel_array.astype(float)
            # the lesion is brighter than the brain around it (a finding one can see)
            ring = np.zeros_like(mask)
            rows, cols = np.nonzero(mask)
            ring[max(rows.min() - 4, 0) : rows.max() + 5, max(cols.min() - 4, 0) : cols.max() + 5] = True
            assert pixels[mask].mean() > pixels[ring & ~mask].mean()
        else:
            assert study.mask_path is None
    # the mask never travels in the DICOM
    dicom = tmp_path / "a" / "dicom"
    assert all(p.suffix == ".dcm" for p in dicom.rglob("*") if p.is_file())
    assert {s.sex for s in lesions.studies} == {"F", "M"} and len({s.site for s in lesions.studies}) == 4


def test_deterministic_and_read_back(tmp_path: Path) -> None:
    first = write_lesion_studies(tmp_path / "a", studies=4, seed=1, size=48)
    second = write_lesion_studies(tmp_path / "b", studies=4, seed=1, size=48)
    for a, b in zip(first.studies, second.studies, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()
    again = read_lesion_set(tmp_path / "a")
    assert [s.accession_number for s in again.studies] == [s.accession_number for s in first.studies]
    assert again.masks.keys() == first.masks.keys()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="studies"):
        write_lesion_studies(tmp_path, studies=1)
    with pytest.raises(ValueError, match="size"):
        write_lesion_studies(tmp_path, studies=4, size=8)
    with pytest.raises(ValueError, match="prevalence"):
        write_lesion_studies(tmp_path, studies=4, prevalence=1.0)


def test_the_sites_split_is_stratified_and_the_same_for_every_export(tmp_path: Path) -> None:
    fractions = {"train": 0.35, "val": 0.15, "test": 0.5}
    first = write_lesion_studies(tmp_path / "a", studies=40, seed=2, size=48, split=fractions)
    second = write_lesion_studies(tmp_path / "b", studies=40, seed=2, size=48, split=fractions)
    rows = list(csv.DictReader(first.labels_csv.open()))
    assert list(rows[0]) == ["accession_number", "label", "split"]
    assert rows == list(csv.DictReader(second.labels_csv.open()))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for label in ("0", "1"):  # every class in every split
        assert {r["split"] for r in rows if r["label"] == label} == {"train", "val", "test"}
    test_share = sum(r["split"] == "test" for r in rows) / len(rows)
    assert abs(test_share - fractions["test"]) <= 0.1
    plain = write_lesion_studies(tmp_path / "c", studies=4, seed=2, size=48)
    assert list(next(csv.DictReader(plain.labels_csv.open()))) == ["accession_number", "label"]
