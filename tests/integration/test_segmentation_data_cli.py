"""The segmentation data path as a new user runs it: anatomy export -> ingest -> dataset create
--task segmentation -> dataset show, through the ``radgate`` CLI with role tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imaging.volumes.anatomy import TEMPLATES_DIR

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (TEMPLATES_DIR / "ch2.nii.gz").exists(), reason="mricron-data is not installed"),
]


def _radgate(*args: str, code: int = 0) -> str:
    from radgate.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_anatomy_export_to_segmentation_dataset(tmp_path: Path, as_role: Callable[[str], str]) -> None:
    as_role("data-steward")
    export = tmp_path / "export"
    out = _radgate("demo-data", str(export), "--anatomy", "--patients", "4", "--spacing", "6", "--seed", "2")
    assert "wrote 4 MR series" in out and (export / "labels.csv").exists()
    _radgate("ingest", str(export / "dicom"), "--workers", "1")
    names = "background,cerebellum,deep_grey_nuclei,occipital_lobe"
    labels = str(export / "labels.csv")
    out = _radgate(
        "dataset", "create", "brain", "--task", "segmentation", "--labels", labels, "--label-names", names
    )
    assert "created brain" in out and "4 series" in out and "2=deep_grey_nuclei" in out
    shown = json.loads(_radgate("dataset", "show", "brain"))
    assert shown["task"] == "segmentation" and shown["series"] == 4 and shown["patients"] == 4
    assert all(shown["label_voxels"][n] > 0 for n in names.split(","))
    items = json.loads(_radgate("dataset", "show", "brain", "--items"))["items"]
    assert len(items) == 4 and all(len(i["label_sha256"]) == 64 and i["instances"] for i in items)
    # too few names for the label values: a clear error, nothing created, no identifier printed
    out = _radgate(
        "dataset",
        "create",
        "other",
        "--task",
        "segmentation",
        "--labels",
        labels,
        "--label-names",
        "background",
        code=2,
    )
    assert "out of range" in out and "M02" not in out
    assert "no dataset version" in _radgate("dataset", "show", "other", code=2)
    # a clinical reviewer may not create datasets: roles are checked on every command
    as_role("clinical-reviewer")
    _radgate("dataset", "create", "x", "--task", "segmentation", "--labels", labels, code=4)
