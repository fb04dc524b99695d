"""Erasure search never passes over a sealed item it cannot read: a quarantined input that does
not unseal is reported in the plan (store, short id, error type), next to the one it found."""

from __future__ import annotations

from pathlib import Path

from governance.catalog import QuarantineRecord, open_catalog
from governance.keyring import RECORD_QUARANTINE
from governance.keys import load_project_key
from governance.settings import get_settings
from imaging.compliance.erasure_find import find_patient_data
from tests.dicom_factory import PATIENT_ID, encode, make_ct


def _quarantine(session: object, sha: str, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    session.add(  # type: ignore[attr-defined]
        QuarantineRecord(
            input_sha256=sha, reason="test", detail="", path=str(path), source="test", size=len(data)
        )
    )


def test_an_unsealable_quarantined_input_is_reported_not_skipped(radgate_home: Path) -> None:
    settings = get_settings()
    key = load_project_key(settings)
    folder = radgate_home / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    good, damaged = "a" * 64, "b" * 64
    with open_catalog(settings).session() as session:
        sealed = key.seal(encode(make_ct()), good.encode(), record=RECORD_QUARANTINE)
        _quarantine(session, good, folder / f"{good}.sealed", sealed)
        _quarantine(session, damaged, folder / f"{damaged}.sealed", b"not a sealed box")
    with open_catalog(settings).session() as session:
        plan = find_patient_data(session, key, PATIENT_ID, settings)
    assert [sha for sha, _ in plan.quarantine] == [good]
    assert plan.unreadable == [
        {"store": "quarantine", "item": damaged[:16], "error": plan.unreadable[0]["error"]}
    ]
    assert plan.unreadable[0]["error"]  # the error's type, never its message (no PHI)
    assert plan.to_dict()["unreadable"] == plan.unreadable


def test_the_erase_command_shows_an_unreadable_item_in_its_text_report(radgate_home: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from governance.testing import create_cast
    from imaging.compliance import cli as compliance_cli

    settings = get_settings()
    folder = radgate_home / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    damaged = "c" * 64
    with open_catalog(settings).session() as session:
        _quarantine(session, damaged, folder / f"{damaged}.sealed", b"not a sealed box")
    cast = create_cast()
    app = typer.Typer()
    compliance_cli.register(app)
    dry = CliRunner().invoke(
        app, ["erase", "--patient", PATIENT_ID, "--dry-run", "--token", cast.tokens["broker"]]
    )
    assert dry.exit_code == 0, dry.output
    assert f"unresolved quarantine {damaged[:16]}" in dry.output and PATIENT_ID not in dry.output
