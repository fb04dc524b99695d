"""Erasure asks every declared patient store through one interface: serving's stores are found
by entry point, the FHIR outbox gives up exactly the patient's results (whether the EMR sees the
original identifier or a pseudonym), and what a store cannot attribute is reported."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from governance.keys import load_project_key
from governance.settings import get_settings
from imaging.compliance.holdings import PatientQuery, PatientStore, patient_stores
from tests.dicom_factory import PATIENT_ID, encode, make_ct

OTHER = "MRN0000042"


def _response() -> dict[str, Any]:
    return {
        "model": {"name": "cxr", "version": "1"},
        "approval": {"status": "approved", "artifact_sha256": "ab" * 32},
        "results": [
            {
                "request_id": uuid.uuid4().hex,
                "finding": "opacity",
                "probability": 0.91,
                "decision": {"positive": True, "threshold": 0.5},
            }
        ],
    }


def _record(profile: str, patient_id: str) -> str:
    from serving.interop import FhirConfig, IdentifierProfile, record_results

    response = _response()
    ds = make_ct(PatientID=patient_id, StudyInstanceUID=f"1.2.3.{uuid.uuid4().int % 10**12}")
    record_results(FhirConfig(identifiers=IdentifierProfile(profile)), response, [encode(ds)])
    return str(response["results"][0]["request_id"])


def _query(patient_id: str) -> PatientQuery:
    settings = get_settings()
    return PatientQuery(
        patient_id=patient_id, pseudonym="unused", key=load_project_key(settings), settings=settings
    )


def test_the_declared_stores_are_found_by_entry_point() -> None:
    stores = patient_stores()
    assert [s.name for s in stores] == ["fhir-outbox", "object-store", "served-inputs"]
    assert all(isinstance(s, PatientStore) for s in stores)


def test_the_fhir_outbox_gives_up_exactly_the_patients_results(radgate_home: Path) -> None:
    from serving.erasure_stores import FhirOutboxStore

    mine = {_record("deidentified", PATIENT_ID), _record("original", PATIENT_ID)}
    theirs = {_record("deidentified", OTHER), _record("original", OTHER)}
    outbox = radgate_home / "fhir"
    before = {p.name for p in outbox.rglob("*.json")}
    assert len(before) == 8  # per result: its local facts and its queued bundle
    store = FhirOutboxStore()
    holding = store.find(_query(PATIENT_ID))
    assert set(holding.items) == mine and holding.unreadable == []
    assert store.erase(holding) == 2
    left = "\n".join(p.read_text() for p in outbox.rglob("*.json"))
    assert all(result not in left for result in mine)
    assert all(result in left for result in theirs)
    assert PATIENT_ID not in left and OTHER in left  # the original-profile bundle of the other stays
    assert store.find(_query(PATIENT_ID)).items == []  # a re-run finds nothing more


def test_a_pseudonymous_result_without_a_lookup_is_reported_not_skipped(radgate_home: Path) -> None:
    from serving.erasure_stores import FhirOutboxStore

    result = _record("deidentified", OTHER)
    (facts_file,) = (radgate_home / "fhir" / "results").glob("*.json")
    facts = json.loads(facts_file.read_text())
    del facts["erasure_lookup"]  # as written before the lookup existed
    facts_file.write_text(json.dumps(facts))
    holding = FhirOutboxStore().find(_query(PATIENT_ID))
    assert holding.items == []
    assert holding.unreadable == [
        {"store": "fhir-outbox", "item": facts_file.stem[:16], "error": "LookupError"}
    ]
    assert result not in json.dumps(holding.unreadable) and OTHER not in json.dumps(holding.unreadable)


def test_stale_metadata_without_stores_stops_erasure(monkeypatch: pytest.MonkeyPatch) -> None:
    import imaging.compliance.holdings as holdings

    monkeypatch.setattr(holdings, "entry_points", lambda group: [])
    with pytest.raises(holdings.StoreUnavailable, match="reinstall"):
        holdings.patient_stores()
