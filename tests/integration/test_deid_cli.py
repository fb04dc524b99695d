"""`radgate deid`, `ingest`, `catalog` and `reid` as a user runs them (subprocesses, real catalog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.dicom_factory import PATIENT_ID, PATIENT_NAME, encode, make_ct

pytestmark = pytest.mark.integration

RADGATE = [sys.executable, "-m", "radgate"]


def run(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*RADGATE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"radgate {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def input_tree(tmp_path: Path) -> Path:
    root = tmp_path / "in" / f"{PATIENT_NAME.replace('^', '_')}"  # a name in the path, as exports do
    root.mkdir(parents=True)
    for i in range(4):
        (root / f"ct{i}.dcm").write_bytes(encode(make_ct(InstanceNumber=i + 1)))
    (root / "us.dcm").write_bytes(encode(make_ct(Modality="US")))
    (root / "notes.txt").write_text(f"patient {PATIENT_NAME} {PATIENT_ID}")
    (root / "truncated.dcm").write_bytes(encode(make_ct())[:700])
    (root / "empty.dcm").write_bytes(b"")
    return tmp_path / "in"


def test_deid_folder_report_counts_and_quarantine(
    input_tree: Path, tmp_path: Path, radgate_home: Path, as_role: Callable[[str], str]
) -> None:
    as_role("data-steward")
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = run("deid", str(input_tree), str(out), "--workers", "2", "--report", str(report))
    data = json.loads(report.read_text())
    assert data["inputs"] == 8
    # the ultrasound instance is screened by OCR and comes through clean (no longer quarantined
    # by modality)
    assert data["deidentified"] == 5
    assert data["quarantined"] == 3
    assert data["inputs"] == data["deidentified"] + data["quarantined"]
    reasons = data["quarantine_reasons"]
    assert "burned_in_risk" not in reasons and reasons["not_dicom"] == 2
    # where the truncation falls decides which check catches it first
    assert sum(reasons.get(r, 0) for r in ("corrupt", "missing_pixel_data", "missing_identifiers")) == 1
    outputs = list(out.rglob("*.dcm"))
    assert len(outputs) == 5
    for path in outputs:
        raw = path.read_bytes()
        assert PATIENT_ID.encode() not in raw and b"DOEWINTERS" not in raw
        assert dcmread(path).PatientIdentityRemoved == "YES"
        assert "DOEWINTERS" not in str(path)
    # quarantine lives under RADGATE_HOME, sealed, never in OUTPUT_DIR
    sealed = list((radgate_home / "quarantine").glob("*.sealed"))
    assert len(sealed) == 3
    for path in sealed:
        assert PATIENT_ID.encode() not in path.read_bytes()
    # no PHI in anything printed
    for text in (proc.stdout, proc.stderr, report.read_text()):
        assert PATIENT_ID not in text and "DOEWINTERS" not in text.upper()


def test_deid_refuses_output_inside_input(input_tree: Path, as_role: Callable[[str], str]) -> None:
    as_role("data-steward")
    proc = run("deid", str(input_tree), str(input_tree / "out"), check=False)
    assert proc.returncode == 2 and "inside" in proc.stderr


def test_ingest_is_idempotent_and_catalog_lists(input_tree: Path, as_role: Callable[[str], str]) -> None:
    as_role("data-steward")
    first = tmp = run("ingest", str(input_tree), "--workers", "1")
    assert "deidentified" in first.stdout
    second = run("ingest", str(input_tree), "--workers", "2", "--report", str(input_tree.parent / "r.json"))
    data = json.loads((input_tree.parent / "r.json").read_text())
    assert data["duplicates"] == 5 and data["deidentified"] == 5
    summary = json.loads(run("catalog", "--json").stdout)
    counts = {row["what"]: row["count"] for row in summary}
    assert counts["instances"] == 5 and counts["studies"] == 5 and counts["quarantined"] == 3
    quarantine = json.loads(run("catalog", "--level", "quarantine", "--json").stdout)
    assert "not_dicom" in {row["reason"] for row in quarantine}
    assert tmp is first and second.returncode == 0


def _users() -> tuple[str, str, dict[str, str]]:
    """Bootstrap an admin through the CLI, then an honest broker and a data steward; returns
    (admin token, broker token, environment of the steward)."""
    admin = run("users", "add", "root", "--role", "admin").stdout
    admin_token = next(w for w in admin.split() if w.startswith("rg_"))
    broker = run("users", "add", "broker", "--role", "honest-broker", "--token", admin_token).stdout
    broker_token = next(w for w in broker.split() if w.startswith("rg_"))
    steward = run("users", "add", "steward", "--role", "data-steward", "--token", admin_token).stdout
    steward_token = next(w for w in steward.split() if w.startswith("rg_"))
    return admin_token, broker_token, {"RADGATE_TOKEN": steward_token}


def test_reid_requires_honest_broker_and_is_audited(input_tree: Path, tmp_path: Path) -> None:
    admin_token, broker_token, steward = _users()
    run("ingest", str(input_tree), env=steward)
    instances = json.loads(run("catalog", "--level", "studies", "--json", env=steward).stdout)
    pseudonym = instances[0]["patient"]
    denied = run("reid", pseudonym, "--reason", "ethics 42", "--token", admin_token, check=False)
    assert denied.returncode == 4 and PATIENT_ID not in denied.stdout + denied.stderr
    found = run("reid", pseudonym, "--kind", "patient_id", "--reason", "ethics 42", "--token", broker_token)
    assert PATIENT_ID in found.stdout
    audit = run("audit", "list", "--json", "--action", "reid", "--token", admin_token).stdout
    assert '"reid"' in audit and "reid.denied" in audit
    assert PATIENT_ID not in audit


def test_keys_rotate_reseals_map_and_quarantine(input_tree: Path, radgate_home: Path) -> None:
    from governance.keys import load_project_key
    from governance.settings import get_settings

    admin_token, broker_token, steward = _users()
    run("ingest", str(input_tree), env=steward)
    pseudonym = json.loads(run("catalog", "--level", "studies", "--json", env=steward).stdout)[0]["patient"]
    sealed = sorted((radgate_home / "quarantine").glob("*.sealed"))
    before = {p: p.read_bytes() for p in sealed}
    get_settings.cache_clear()
    old_id = load_project_key().seal_key_id
    assert run("keys", "rotate", "--token", broker_token, check=False).returncode == 4  # admin only
    rotated = run("keys", "rotate", "--token", admin_token)
    assert "re-sealed" in rotated.stdout
    get_settings.cache_clear()
    key = load_project_key()
    assert key.seal_key_id != old_id
    for path, old_bytes in before.items():
        assert path.read_bytes() != old_bytes
        key.unseal(path.read_bytes(), path.stem.encode(), record="quarantine-input")  # the new key only
    found = run("reid", pseudonym, "--kind", "patient_id", "--reason", "audit", "--token", broker_token)
    assert PATIENT_ID in found.stdout  # pseudonyms unchanged, originals still readable
    audit = run("audit", "list", "--json", "--action", "keys.", "--token", admin_token).stdout
    assert "keys.rotate" in audit
