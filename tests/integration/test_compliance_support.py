"""Shared state builders for the compliance, quality and erasure tests (no tests here).

Everything is real: synthetic PHI-bearing studies ingested into the catalog and the store,
dataset versions from labels files, the MLflow SQLite registry, users with tokens.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from imaging.demo_data import DemoSet, DemoStudy, write_demo_studies


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite store, copied into a test's RADGATE_HOME when it needs one."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@dataclass
class Ingested:
    demo: DemoSet
    source: Path


def ingest_demo(
    home: Path, *, patients: int = 8, images: int = 2, seed: int = 11, size: int = 48
) -> Ingested:
    """Write synthetic studies and ingest them through the real pipeline (store + catalog)."""

    source = home.parent / "pacs-export"
    demo = write_demo_studies(source, patients=patients, images_per_patient=images, seed=seed, size=size)
    ingest_files(demo.files)
    return Ingested(demo, source)


def ingest_files(files: Iterable[Path]) -> dict[str, object]:
    from imaging.ingest import Sink, iter_files, run_files

    return run_files(list(iter_files(list(files))), sink=Sink.STORE, workers=1, source="test").as_dict()


def write_labels(path: Path, rows: Iterable[tuple[str, int]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accession_number", "label"])
        writer.writerows(rows)
    return path


def copy_study(
    study: DemoStudy,
    out: Path,
    *,
    patient_id: str,
    accession: str,
    pixels: np.ndarray | None = None,
    **attributes: object,
) -> Path:
    """A new study of ``patient_id`` made from ``study``'s file: new UIDs and accession, the
    same (or the given) pixels, extra header attributes set."""
    from pydicom.uid import generate_uid

    ds = dcmread(study.path)
    ds.PatientID = patient_id
    ds.PatientName = f"COPY^{patient_id}"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if pixels is not None:
        ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def instance_for_accession(accession: str) -> str:
    """Content hash of the instance ingested for an original accession number (keyed lookup)."""
    from sqlalchemy import select

    from governance.catalog import Instance, Pseudonym, open_catalog
    from governance.keys import load_project_key
    from imaging.deid import Pseudonymizer, PseudonymKind

    lookup = Pseudonymizer(load_project_key()).lookup(PseudonymKind.ACCESSION, accession)
    with open_catalog().session() as session:
        study = session.scalar(select(Pseudonym.pseudonym).where(Pseudonym.lookup == lookup))
        sha = session.scalar(select(Instance.sha256).where(Instance.study_instance_uid == study))
    assert sha, "accession not ingested"
    return str(sha)
