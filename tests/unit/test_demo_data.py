"""The synthetic radiograph generator writes valid, labelled, PHI-bearing DICOM."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from imaging.demo_data import write_demo_studies


def test_writes_studies_with_phi_labels_and_variety(tmp_path: Path) -> None:
    demo = write_demo_studies(tmp_path / "out", patients=12, images_per_patient=2, seed=1, size=32)
    assert len(demo.files) == 24 and all(f.exists() for f in demo.files)
    rows = list(csv.DictReader(demo.labels_csv.open()))
    assert [r["accession_number"] for r in rows] == [s.accession_number for s in demo.studies]
    assert {r["label"] for r in rows} == {"0", "1"}
    assert len({s.site for s in demo.studies}) >= 3
    assert len({s.manufacturer for s in demo.studies}) >= 3
    assert {s.sex for s in demo.studies} == {"F", "M"}
    assert {s.modality for s in demo.studies} == {"CR", "DX"}
    ds = pydicom.dcmread(demo.files[0])
    assert ds.AccessionNumber == demo.studies[0].accession_number
    assert str(ds.PatientName).split("^")[0] in ds.StudyDescription
    for keyword in ("PatientID", "PatientBirthDate", "InstitutionName", "InstitutionAddress",
                    "ReferringPhysicianName", "OperatorsName", "StudyDate"):  # fmt: skip
        element = ds.data_element(keyword)
        assert element is not None and str(element.value)
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint16 and pixels.shape == (32, 32)
    assert ds.PhotometricInterpretation == "MONOCHROME2"


def test_is_deterministic(tmp_path: Path) -> None:
    a = write_demo_studies(tmp_path / "a", patients=3, images_per_patient=1, seed=7, size=16)
    b = write_demo_studies(tmp_path / "b", patients=3, images_per_patient=1, seed=7, size=16)
    assert [f.read_bytes() for f in a.files] == [f.read_bytes() for f in b.files]


def test_positives_hold_a_bright_opacity_in_the_lungs(tmp_path: Path) -> None:
    demo = write_demo_studies(tmp_path / "o", patients=30, images_per_patient=1, seed=2, size=64)

    def lung_peak(path: Path) -> float:
        ds = pydicom.dcmread(path)
        upper_lungs = ds.pixel_array[10:30].astype(float) / (1 << ds.BitsStored)
        fields = np.concatenate([upper_lungs[:, 8:26], upper_lungs[:, 38:56]], axis=1)
        return float(np.percentile(fields, 99) - np.median(fields))

    pos = [lung_peak(s.path) for s in demo.studies if s.label]
    neg = [lung_peak(s.path) for s in demo.studies if not s.label]
    assert 0.3 < demo.prevalence < 0.7
    assert np.mean(pos) > np.mean(neg)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_files_pass_dciodvfy(tmp_path: Path) -> None:
    demo = write_demo_studies(tmp_path / "v", patients=8, images_per_patient=1, seed=0, size=32)
    for path in demo.files:
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "Error" not in result.stderr, result.stderr


def test_cli_demo_data(tmp_path: Path) -> None:
    import typer

    from training.cli import register

    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep Typer in multi-command mode
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "cli"), "--patients", "2", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "labels.csv").exists()
    assert "wrote 4 studies" in result.output
