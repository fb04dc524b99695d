"""The real DICOM files that packages ship, with and without planted PHI: no leak, valid output."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from governance.keys import ProjectKey
from imaging.corpus import packaged_dicom_files
from imaging.deid import Deidentifier, load_profile
from imaging.phi_corpus import (
    burned_in_instances,
    identifying_values,
    plant_phi,
    residual_phi,
    residual_pixel_phi,
)
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom

pytestmark = pytest.mark.integration

KEY = ProjectKey(b"\x05" * 32)
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = packaged_dicom_files()
    if len(files) < 100:
        pytest.fail("packaged DICOM corpus missing: pip install pydicom-data deid-data")
    return files


@pytest.mark.parametrize("profile", ["research", "basic"])
def test_real_files_leave_no_identifying_value(corpus: list[Path], profile: str) -> None:
    quiet_pydicom()
    prof = load_profile(profile)
    engine = Deidentifier(prof, KEY)
    outcomes: Counter[str] = Counter()
    leaks: dict[str, list[str]] = {}
    for path in corpus:
        data = path.read_bytes()
        result = process_bytes(data, engine, KEY, prof)
        outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.DEIDENTIFIED:
            assert result.output is not None
            found = residual_phi(result.output, identifying_values(data))
            if found:
                leaks[path.name] = found
    assert outcomes["deidentified"] > 80  # header-only DICOMDIR samples are quarantined (no pixels)
    assert sum(outcomes.values()) == len(corpus)
    assert leaks == {}


def test_planted_phi_corpus_leaves_nothing(corpus: list[Path], tmp_path: Path) -> None:
    quiet_pydicom()
    prof = load_profile("research")
    engine = Deidentifier(prof, KEY)
    planted = plant_phi(corpus, tmp_path / "planted", copies=1, seed=3)
    assert len(planted) > 150
    checked = 0
    for item in planted:
        data = item.path.read_bytes()
        result = process_bytes(data, engine, KEY, prof)
        if result.outcome is not Outcome.DEIDENTIFIED:
            continue
        assert result.output is not None
        assert residual_phi(result.output, set(item.planted) | identifying_values(data)) == [], (
            item.source.name
        )
        checked += 1
    assert checked > 80
    # identifiers burned into the pixels of real images: none readable in the stored output
    burned = burned_in_instances(tmp_path / "burned", copies=1, seed=3)
    stored = 0
    for item in burned:
        data = item.path.read_bytes()
        result = process_bytes(data, engine, KEY, prof)
        if result.outcome is not Outcome.DEIDENTIFIED:
            assert result.reason is not None and result.reason.value.startswith("pixel_")
            continue
        assert result.output is not None
        assert residual_phi(result.output, set(item.planted) | identifying_values(data)) == []
        assert residual_pixel_phi(result.output, item.planted) == [], item.source.name
        stored += 1
    assert stored >= len(burned) // 2


def _errors(path: Path) -> set[str]:
    assert DCIODVFY is not None
    proc = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    # Values differ after de-identification (UIDs, dates): compare the messages without them.
    return {re.sub(r"<[0-9.]+>", "<v>", line) for line in lines if line.startswith("Error")}


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools not installed (scripts/ci/install-system-deps.sh)")
def test_output_has_no_dciodvfy_error_the_input_did_not_have(corpus: list[Path], tmp_path: Path) -> None:
    quiet_pydicom()
    prof = load_profile("research")
    engine = Deidentifier(prof, KEY)
    new_errors: dict[str, set[str]] = {}
    for path in corpus:
        result = process_bytes(path.read_bytes(), engine, KEY, prof)
        if result.outcome is not Outcome.DEIDENTIFIED or result.output is None:
            continue
        out = tmp_path / "out.dcm"
        out.write_bytes(result.output)
        added = _errors(out) - _errors(path)
        if added:
            new_errors[path.name] = added
    assert new_errors == {}
