"""``radgate explain-segmentation`` as a user runs it: a 3D UNet version registered in the
embedded MLflow, a DICOM series folder in, PNG overlays of the structure's slices + JSON out;
roles checked; a folder with two series refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.test_explain_cli import _app
from tests.seg_series import make_series

pytestmark = pytest.mark.integration


def test_explain_segmentation_cli(tmp_path: Path) -> None:
    from governance.audit import AuditLog
    from governance.cli.guard import guard_typer_app
    from governance.testing import create_cast
    from serving.testing import register_segmentation_model

    cast = create_cast()
    version = register_segmentation_model("seg-explain", labels={1: "Thalamus"}, roi_size=(16, 16, 16))
    series = tmp_path / "series"
    series.mkdir()
    for index, ds in enumerate(make_series(slices=10, size=24, spacing=(3.0, 3.0, 3.0), seed=31)):
        ds.save_as(series / f"{index:03d}.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    args = ["explain-segmentation", str(series), "--model", f"seg-explain/{version}", "-s", "Thalamus"]
    runner = CliRunner()
    app = guard_typer_app(_app())
    denied = runner.invoke(app, [*args, "--out", str(out), "--token", cast.tokens["pacs"]])
    assert denied.exit_code == 4 and not out.exists(), denied.output
    done = runner.invoke(
        app, [*args, "--out", str(out), "--slices", "2", "--sanity", "--token", cast.tokens["doc"]]
    )
    assert done.exit_code == 0, done.output
    summary = json.loads((out / "explanation.json").read_text())
    assert summary["structure"] == "Thalamus" and summary["method"] == "gradcam"
    assert len(summary["pngs"]) == 2 and all(
        Path(p).read_bytes().startswith(b"\x89PNG") for p in summary["pngs"]
    )
    assert set(summary["sanity"]) >= {"spearman", "control_spearman", "passed"}
    assert summary["segmentation"]["shape"] == [10, 24, 24]

    for index, ds in enumerate(make_series(slices=4, size=24, seed=32)):
        ds.save_as(series / f"other-{index}.dcm", enforce_file_format=True)
    mixed = runner.invoke(app, [*args, "--out", str(tmp_path / "o2"), "--token", cast.tokens["eng"]])
    assert mixed.exit_code == 2 and "2 series" in mixed.output, mixed.output
    assert "SYNTH" not in mixed.output
    entries = [e for e in AuditLog().entries(newest_first=True) if e.action == "explain.segmentation"]
    assert [e.actor for e in entries] == ["doc"]
