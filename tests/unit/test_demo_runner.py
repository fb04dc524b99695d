"""The demo's stage table and summary, its failure reporting, and its residual-PHI scan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imaging.phi_corpus import residual_phi
from radgate.demo_stages import _PLAIN, _UID_VALUE, DemoFailure, StageRunner, _residual


def test_stages_are_timed_and_a_failure_names_its_stage(tmp_path: Path) -> None:
    runner = StageRunner(tmp_path, "classification")
    with runner.stage("data", "1. data"):
        runner.summary["data"] = {"studies": 3}
    with pytest.raises(DemoFailure) as caught, runner.stage("train", "2. train", "radgate train --help"):
        raise RuntimeError("no images")
    assert caught.value.stage == "train" and "RuntimeError: no images" in caught.value.why
    assert caught.value.next_step == "radgate train --help"
    runner.skip("serve", "not asked for")
    path = runner.finish(caught.value)
    summary = json.loads(path.read_text())
    assert [(s["stage"], s["outcome"]) for s in summary["stages"]] == [
        ("data", "ok"), ("train", "failed"), ("serve", "skipped"),
    ]  # fmt: skip
    assert summary["failed"] == {
        "stage": "train",
        "why": "RuntimeError: no images",
        "next": "radgate train --help",
    }
    assert summary["data"] == {"studies": 3} and summary["elapsed_s"] >= 0


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"xx RGHL0700001\x00yy", "RGHL0700001"),
        (b"xx RGHL0700001X yy", "RGHL0700001"),
        (b"x.rghl0700001.y", "RGHL0700001"),
        (b"2.25.1234.5\x00", "2.25.1234"),
        (b"\x002.25.1234\x00", "2.25.1234"),
        (b"SMITH^JOHN", "SMITH^JOHN"),
        (b"SMITH^JOHNNY", "SMITH^JOHN"),
    ],
)
def test_residual_scan_agrees_with_residual_phi(data: bytes, value: str) -> None:
    uids = {value} if _UID_VALUE.match(value) else set()
    plain = {value.upper()} if not uids and _PLAIN.match(value) else set()
    others = {value} - uids - ({value} if plain else set())
    assert _residual(data, plain, uids, others) == bool(residual_phi(data, [value]))
