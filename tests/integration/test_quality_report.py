"""Dataset quality and bias report on a deliberately skewed dataset with planted duplicates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from pydicom import dcmread
from typer.testing import CliRunner

from imaging.datasets import create_dataset
from imaging.quality import build_report, log_dataset_report, write_report
from imaging.store import ContentStore
from tests.integration.test_compliance_support import (
    copy_study,
    ingest_demo,
    ingest_files,
    instance_for_accession,
    mlflow_template,
    write_labels,
)

pytestmark = pytest.mark.integration
__all__ = ["mlflow_template"]


@pytest.fixture()
def skewed(radgate_home: Path) -> dict[str, object]:
    """12 patients at 4 sites; one site's studies all positive, the others mostly negative;
    one exact pixel copy and one brightness-changed copy of two studies, as new patients."""
    ingested = ingest_demo(radgate_home, patients=12, images=2, seed=21, size=64)
    studies = ingested.demo.studies
    site_a = studies[0].site
    labels = [(s.accession_number, 1 if s.site == site_a else int(i % 5 == 0)) for i, s in enumerate(studies)]
    exact_src, near_src = studies[2], studies[5]
    extra = ingested.source / "planted"
    exact = copy_study(exact_src, extra / "exact.dcm", patient_id="DUP0001", accession="DUPACC1")
    pixels = dcmread(near_src.path).pixel_array.astype(np.float64)
    brighter = np.clip(np.round(pixels * 0.92 + 40), 0, (1 << dcmread(near_src.path).BitsStored) - 1)
    near = copy_study(
        near_src, extra / "near.dcm", patient_id="DUP0002", accession="DUPACC2", pixels=brighter
    )
    report = ingest_files([exact, near])
    assert report["deidentified"] == 2
    labels += [("DUPACC1", labels[2][1]), ("DUPACC2", 1 - labels[5][1])]  # the near copy disagrees
    csv_path = write_labels(radgate_home.parent / "labels.csv", labels)
    version = create_dataset("skewed", csv_path, label_names=["no_finding", "opacity"]).version
    return {
        "version": version,
        "site_a": site_a,
        "exact_pair": {
            instance_for_accession(exact_src.accession_number)[:12],
            instance_for_accession("DUPACC1")[:12],
        },
        "near_pair": {
            instance_for_accession(near_src.accession_number)[:12],
            instance_for_accession("DUPACC2")[:12],
        },
    }


def test_quality_report_shows_skew_and_planted_duplicates(skewed: dict[str, object], tmp_path: Path) -> None:
    version = skewed["version"]
    report = build_report(version)  # type: ignore[arg-type]
    data = report.to_dict()
    assert data["dataset"]["instances"] == 26
    assert sum(s["instances"] for s in data["splits"].values()) == 26
    # Skew: the positive rate by site ranges from 100% (site A) to near 0.
    sites = data["subgroups"]["site"]
    assert max(g["positive_rate"] for g in sites.values()) == 1.0
    codes = {w["code"] for w in data["warnings"]}
    assert "subgroup-prevalence-gap" in codes
    gap = next(
        w for w in data["warnings"] if w["code"] == "subgroup-prevalence-gap" and "site" in w["message"]
    )
    assert gap["value"] > gap["threshold"]
    assert set(data["subgroups"]) == {"site", "manufacturer", "sex", "age_band"}
    # Duplicates: exactly the planted pixel copy; the brightness-changed copy as a near duplicate.
    exact = data["duplicates"]["exact"]
    assert exact["within_split"] + exact["across_splits"] == 1
    assert {exact["pairs"][0]["a"], exact["pairs"][0]["b"]} == skewed["exact_pair"]
    near_pairs = [{p["a"], p["b"]} for p in data["duplicates"]["near"]["pairs"]]
    assert skewed["near_pair"] in near_pairs
    assert "duplicates-with-different-labels" in codes
    assert codes & {"duplicates-within-split", "duplicates-across-splits"}
    # Acquisition: the demo mixes CR and DX and 10/12/14-bit detectors.
    assert len(data["acquisition"]["modality"]) == 2
    assert "inconsistent-acquisition" in codes
    assert data["pixels"]["unreadable"] == 0
    paths = write_report(report, tmp_path / "out")
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "subgroup-prevalence-gap" in html
    assert json.loads(paths["json"].read_text())["status"] == "warnings"


def test_quality_report_counts_missing_pixels(skewed: dict[str, object]) -> None:
    version = skewed["version"]
    store = ContentStore.from_settings()
    victim = version.manifest.items[0]  # type: ignore[attr-defined]
    store.path(victim.store_key).unlink()
    data = build_report(version).to_dict()  # type: ignore[arg-type]
    assert data["pixels"]["unreadable"] == 1
    assert data["pixels"]["instances"] == [{"sha256": victim.sha256[:12], "reason": "missing-object"}]
    assert "unreadable-pixels" in {w["code"] for w in data["warnings"]}


def test_dataset_report_cli_and_mlflow(
    skewed: dict[str, object], mlflow_template: Path, radgate_home: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from governance.testing import copy_store
    from imaging import dataset_cli as datasets_cli
    from imaging.quality import cli as quality_cli

    app = typer.Typer()
    datasets_cli.register(app)
    quality_cli.register(app)
    version: Any = skewed["version"]
    result = CliRunner().invoke(
        app, ["dataset", "report", f"skewed@{version.short_id}", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "subgroup-prevalence-gap" in result.output and (tmp_path / "r" / "report.html").exists()
    strict = CliRunner().invoke(
        app, ["dataset", "report", "skewed", "--strict", "--out", str(tmp_path / "s")]
    )
    assert strict.exit_code == 1
    missing = CliRunner().invoke(app, ["dataset", "report", "nope"])
    assert missing.exit_code == 2 and "Traceback" not in missing.output

    copy_store(mlflow_template, radgate_home)
    client = MlflowClient(f"sqlite:///{radgate_home / 'mlflow.db'}")
    experiment = client.create_experiment("dq", artifact_location=(radgate_home / "mlartifacts").as_uri())
    run = client.create_run(experiment)
    report = log_dataset_report(version, run_id=run.info.run_id)
    logged = client.get_run(run.info.run_id)
    assert logged.data.tags["radgate.dataset.quality"] == "warnings"
    assert (
        logged.data.metrics["dq_exact_duplicates_within_split"]
        + logged.data.metrics["dq_exact_duplicates_across_splits"]
        == 1
    )
    files = {f.path for f in client.list_artifacts(run.info.run_id, "dataset_quality")}
    assert {"dataset_quality/report.json", "dataset_quality/report.html"} <= files
    assert report.status == "warnings"
