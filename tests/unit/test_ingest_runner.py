"""The folder runner: huge files quarantined unread, lineage recorded, counts add up, sealed map."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from governance.catalog import LineageEvent, Pseudonym, QuarantineRecord, open_catalog
from governance.keys import load_project_key
from imaging.deid import load_profile
from imaging.ingest import Sink, run_files
from tests.dicom_factory import PATIENT_ID, encode, make_ct


def test_huge_input_is_quarantined_without_being_read(tmp_path: Path) -> None:
    small = tmp_path / "in" / "small.dcm"
    small.parent.mkdir()
    small.write_bytes(encode(make_ct()))
    big = tmp_path / "in" / "big.dcm"
    big.write_bytes(encode(make_ct()) + b"\x00" * 10_000)
    profile = load_profile().model_copy(update={"max_bytes": len(small.read_bytes()) + 100})
    report = run_files([small, big], sink=Sink.FOLDER, output_dir=tmp_path / "out", profile=profile)
    assert (report.inputs, report.deidentified, report.quarantined) == (2, 1, 1)
    assert report.reasons == {"too_large": 1}
    with open_catalog().session() as s:
        row = s.scalars(select(QuarantineRecord)).one()
        assert row.reason == "too_large" and row.path.endswith(".json")  # recorded, bytes not copied


def test_lineage_and_sealed_originals_are_recorded(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(encode(make_ct(InstanceNumber=i + 1)))
        files.append(path)
    report = run_files(files, sink=Sink.STORE, workers=2)
    assert report.deidentified == 3
    key = load_project_key()
    with open_catalog().session() as s:
        assert s.scalar(select(func.count(LineageEvent.id)).where(LineageEvent.step == "ingest")) == 3
        event = s.scalars(select(LineageEvent)).first()
        assert event is not None and event.profile == "research@v1" and event.key_id == key.key_id
        assert PATIENT_ID not in event.source  # file paths are kept only as keyed digests
        originals = s.scalars(select(Pseudonym).where(Pseudonym.kind == "patient_id")).all()
        assert len(originals) == 1  # one patient, stored once
        assert PATIENT_ID.encode() not in originals[0].sealed_original
        assert key.unseal(originals[0].sealed_original, originals[0].lookup.encode()).decode() == PATIENT_ID
    from governance.audit import AuditLog

    entries = [e for e in AuditLog().entries() if e.action == "ingest.run"]
    assert len(entries) == 1 and entries[0].details["deidentified"] == 3
    assert PATIENT_ID not in str(entries[0].details)
