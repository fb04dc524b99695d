"""Sealing originals once per (broker key, kind, lookup) in a process: the catalog keeps one row
per lookup, so the instances after a patient's first must not pay a key agreement each; a new
broker key seals again."""

from __future__ import annotations

from typing import Any

import pytest

from governance.keys import ProjectKey, load_project_key
from imaging import pipeline
from imaging.deid import Deidentifier, DeidRecord, load_profile


def _record(patient: str) -> DeidRecord:
    return DeidRecord(
        sop_class_uid="1.2",
        sop_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3.4.5",
        patient_pseudonym="P",
        modality="CT",
        attributes={},
        originals=[("patient_id", patient, "PSEUDO")],
    )


def test_the_same_original_is_sealed_once(monkeypatch: pytest.MonkeyPatch, radgate_home: Any) -> None:
    key = load_project_key()
    deid = Deidentifier(load_profile(), key)
    calls: list[bytes] = []
    real = ProjectKey.seal

    def counting(self: ProjectKey, plaintext: bytes, associated: bytes = b"", **kw: Any) -> bytes:
        calls.append(plaintext)
        return real(self, plaintext, associated, **kw)

    monkeypatch.setattr(ProjectKey, "seal", counting)
    pipeline._SEALED_CACHE.clear()
    first = pipeline.seal_originals(key, deid, _record("MRN-CACHE-1"))
    again = pipeline.seal_originals(key, deid, _record("MRN-CACHE-1"))
    other = pipeline.seal_originals(key, deid, _record("MRN-CACHE-2"))
    assert calls == [b"MRN-CACHE-1", b"MRN-CACHE-2"]
    assert again[0].sealed == first[0].sealed and again[0].lookup == first[0].lookup
    assert other[0].sealed != first[0].sealed
    assert all(b"MRN-CACHE" not in cached for cached in pipeline._SEALED_CACHE.values())


def test_a_new_broker_key_is_sealed_to_again(monkeypatch: pytest.MonkeyPatch, radgate_home: Any) -> None:
    key = load_project_key()
    deid = Deidentifier(load_profile(), key)
    pipeline._SEALED_CACHE.clear()
    first = pipeline.seal_originals(key, deid, _record("MRN-ROT"))
    monkeypatch.setattr(ProjectKey, "seal_key_id", property(lambda self: "rotated-broker"))
    rotated = pipeline.seal_originals(key, deid, _record("MRN-ROT"))
    assert rotated[0].sealed != first[0].sealed  # sealed afresh, not taken from the cache
