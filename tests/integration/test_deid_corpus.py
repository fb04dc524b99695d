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
from imaging.deid.values import DUMMY
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
_DUMMIES = {str(v) for v in DUMMY.values() if v}
DCIODVFY = shutil.which("dciodvfy")


def _class(path: Path) -> tuple[str, ...]:
    """Modality, transfer syntax, photometric interpretation, frames (one or many), pixels."""
    from pydicom import dcmread

    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # unreadable files are their own class: they must be quarantined
        return ("unreadable", path.suffix)
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    return (
        str(ds.get("Modality", "") or ""),
        syntax,
        str(ds.get("PhotometricInterpretation", "") or ""),
        "single" if str(ds.get("NumberOfFrames", 1) or 1).strip() in ("1", "") else "multi",
        "pixels" if "PixelData" in ds or ds.get("Rows") else "none",
    )


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    files = packaged_dicom_files()
    if len(files) < 100:
        pytest.fail("packaged DICOM corpus missing: pip install pydicom-data deid-data")
    return files


@pytest.fixture(scope="module")
def representative(corpus: list[Path]) -> list[Path]:
    """One file of every (modality, transfer syntax, photometric, frames) class, plus every
    file with a private-tag-rich or PHI-rich header source (deid-data): the whole packaged
    corpus costs minutes once every image is screened by OCR (the full runs are -m slow)."""
    chosen: dict[tuple[str, ...], Path] = {}
    for path in corpus:
        chosen.setdefault(_class(path), path)
    picked = set(chosen.values()) | {p for p in corpus if "deid" in str(p.parent).lower()}
    return [p for p in corpus if p in picked]


def _leaks(files: list[Path], profile: str) -> tuple[Counter[str], dict[str, list[str]]]:
    quiet_pydicom()
    prof = load_profile(profile)
    engine = Deidentifier(prof, KEY)
    outcomes: Counter[str] = Counter()
    leaks: dict[str, list[str]] = {}
    for path in files:
        data = path.read_bytes()
        result = process_bytes(data, engine, KEY, prof)
        outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.DEIDENTIFIED:
            assert result.output is not None
            # an input value equal to the profile's own dummy (a file already anonymised with
            # date 19000101) is what replacement writes, not a leak
            found = residual_phi(result.output, identifying_values(data) - _DUMMIES)
            if found:
                leaks[path.name] = found
    assert sum(outcomes.values()) == len(files)
    return outcomes, leaks


@pytest.mark.parametrize("profile", ["research", "basic"])
def test_representative_files_leave_no_identifying_value(representative: list[Path], profile: str) -> None:
    outcomes, leaks = _leaks(representative, profile)
    assert len(representative) >= 40
    assert outcomes["deidentified"] >= len(representative) // 3
    assert leaks == {}


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["research", "basic"])
def test_real_files_leave_no_identifying_value(corpus: list[Path], profile: str) -> None:
    outcomes, leaks = _leaks(corpus, profile)
    assert outcomes["deidentified"] > 80  # header-only DICOMDIR samples are quarantined (no pixels)
    assert leaks == {}


@pytest.mark.parametrize(
    "files", [pytest.param("representative"), pytest.param("corpus", marks=pytest.mark.slow)]
)
def test_planted_phi_corpus_leaves_nothing(
    files: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    quiet_pydicom()
    sources: list[Path] = request.getfixturevalue(files)
    prof = load_profile("research")
    engine = Deidentifier(prof, KEY)
    planted = plant_phi(sources, tmp_path / "planted", copies=1, seed=3)
    assert len(planted) > len(sources) // 2
    checked = 0
    for item in planted:
        data = item.path.read_bytes()
        result = process_bytes(data, engine, KEY, prof)
        if result.outcome is not Outcome.DEIDENTIFIED:
            continue
        assert result.output is not None
        assert residual_phi(result.output, (set(item.planted) | identifying_values(data)) - _DUMMIES) == [], (
            item.source.name
        )
        checked += 1
    assert checked > len(sources) // 3
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
        assert residual_phi(result.output, (set(item.planted) | identifying_values(data)) - _DUMMIES) == []
        assert residual_pixel_phi(result.output, item.planted) == [], item.source.name
        stored += 1
    assert stored >= len(burned) // 2


def _inflated(path: Path, out: Path) -> Path:
    """``path`` itself, or a Deflated Explicit VR file re-encoded without deflate at ``out``:
    dciodvfy has no inflate, and on a deflated file it reports only parse noise."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # what pydicom cannot read, dciodvfy judges as it is
        return path
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return path
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out


def _errors(path: Path) -> set[str]:
    assert DCIODVFY is not None
    path = _inflated(path, path.with_name(path.name + ".inflated.dcm"))
    proc = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, timeout=60)
    # Read as bytes and split on newlines only: dciodvfy echoes values in the file's own
    # character set, and a value may hold a carriage return (text mode would split there).
    lines = (proc.stdout + proc.stderr).decode("utf-8", "replace").split("\n")
    # Values differ after de-identification (UIDs, dates, cleaned text): compare the messages
    # without them.
    return {re.sub(r"= <[^>]*>", "= <v>", line) for line in lines if line.startswith("Error")}


@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools not installed (scripts/ci/install-system-deps.sh)")
@pytest.mark.parametrize(
    "files", [pytest.param("representative"), pytest.param("corpus", marks=pytest.mark.slow)]
)
def test_output_has_no_dciodvfy_error_the_input_did_not_have(
    files: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    quiet_pydicom()
    corpus: list[Path] = request.getfixturevalue(files)
    prof = load_profile("research")
    engine = Deidentifier(prof, KEY)
    new_errors: dict[str, set[str]] = {}
    for path in corpus:
        result = process_bytes(path.read_bytes(), engine, KEY, prof)
        if result.outcome is not Outcome.DEIDENTIFIED or result.output is None:
            continue
        out = tmp_path / "out.dcm"
        out.write_bytes(result.output)
        source = tmp_path / "in.dcm"
        source.write_bytes(path.read_bytes())
        added = _errors(out) - _errors(source)
        if added:
            new_errors[path.name] = added
    assert new_errors == {}
