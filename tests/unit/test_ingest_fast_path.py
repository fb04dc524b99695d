"""The ingestor's fast path: records committed on its own DB-API connections are the rows the
engine path writes, and an object written before its digest is known ends at its name (or
leaves nothing behind when its instance fails)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from governance.catalog import Catalog
from governance.settings import get_settings
from tests.dicom_factory import encode, make_ct

_TABLES = {
    "instances": {"id"},
    "lineage": {"id"},
    "pseudonyms": {"id", "sealed_original"},
    "quarantine": {"id"},
}


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the recorder's tables (ids left out; sealed originals differ by nonce)."""
    with sqlite3.connect(path) as db:
        out: dict[str, list[dict[str, Any]]] = {}
        for table, skip in _TABLES.items():
            cursor = db.execute(f"SELECT * FROM {table} ORDER BY id")
            names = [c[0] for c in cursor.description]
            out[table] = [{n: v for n, v in zip(names, row, strict=True) if n not in skip} for row in cursor]
        return out


def test_rows_on_the_dbapi_connections_are_those_of_the_engine(
    radgate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.catalog import models
    from imaging.ingest import Ingestor
    from imaging.ingest import recorder as recorder_module
    from imaging.ingest.recorder import CatalogRecorder, SqliteConnections, result_from
    from imaging.pipeline import process_bytes

    ingestor = Ingestor()  # key, profile and de-identifier
    inputs = [encode(make_ct(InstanceNumber=n)) for n in range(3)] + [b"not dicom at all"]
    processed = [process_bytes(d, ingestor.deid, ingestor.key, ingestor.profile) for d in inputs]
    fixed = models.utcnow()
    monkeypatch.setattr(recorder_module, "utcnow", lambda: fixed)  # one timestamp for both
    paths = []
    for name, dbapi in (("engine", False), ("dbapi", True)):
        path = radgate_home / f"{name}.db"
        catalog = Catalog(f"sqlite:///{path}")
        catalog.upgrade()
        connections = SqliteConnections(catalog.engine) if dbapi else None
        recorder = CatalogRecorder(
            catalog, profile="p", key_id="k", step="ingest", record_instances=True, connections=connections
        )
        results = [result_from(p, "test", p.output_sha256 or "q") for p in processed]
        recorder.record(results[:2])
        recorder.record(results)  # the first two again: duplicates, no second instance row
        assert [r.outcome for r in results] == ["duplicate", "duplicate", "deidentified", "quarantined"]
        if connections is not None:
            connections.close()
        paths.append(path)
    engine_rows, dbapi_rows = (_rows(p) for p in paths)
    assert engine_rows == dbapi_rows
    assert len(engine_rows["instances"]) == 3 and len(engine_rows["quarantine"]) == 1


def test_a_failed_before_commit_rolls_back_and_the_connection_is_reused(radgate_home: Path) -> None:
    from imaging.ingest import Ingestor
    from imaging.ingest.recorder import result_from
    from imaging.pipeline import process_bytes

    ingestor = Ingestor()
    processed = process_bytes(
        encode(make_ct(InstanceNumber=1)), ingestor.deid, ingestor.key, ingestor.profile
    )
    result = result_from(processed, "test", processed.output_sha256)

    def refuse() -> None:
        raise RuntimeError("not placed")

    with pytest.raises(RuntimeError):
        ingestor.recorder.record([result], before_commit=refuse)
    assert ingestor._existing(processed.input_sha256) is None  # nothing committed
    ingestor.recorder.record([result])
    with sqlite3.connect(get_settings().home / "catalog.db") as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone() == (1,)


def test_an_object_written_before_its_digest_lands_at_its_name(radgate_home: Path) -> None:
    from imaging.ingest import Ingestor, IngestStatus

    ingestor = Ingestor()
    outcome = ingestor.ingest_bytes(encode(make_ct(InstanceNumber=2)), "test")
    assert outcome.status is IngestStatus.DEIDENTIFIED and outcome.store_key is not None
    path = ingestor.store.path(outcome.store_key)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == outcome.store_key
    root = Path(get_settings().resolved_object_store)
    assert list(root.rglob(".tmp-*")) == []


def test_an_instance_that_fails_after_encoding_leaves_no_temporary_file(
    radgate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaging import pipeline
    from imaging.ingest import Ingestor

    ingestor = Ingestor()

    def broken(*_args: object) -> list[object]:
        raise RuntimeError("sealing failed")

    monkeypatch.setattr(pipeline, "seal_originals", broken)
    with pytest.raises(RuntimeError):
        ingestor.ingest_bytes(encode(make_ct(InstanceNumber=3)), "test")
    root = Path(get_settings().resolved_object_store)
    assert [p for p in root.rglob("*") if p.is_file() and p.name != ".objects-lock"] == []


def test_a_digest_the_caller_computed_is_used_and_finds_duplicates(radgate_home: Path) -> None:
    from imaging.ingest import Ingestor, IngestStatus

    ingestor = Ingestor()
    data = encode(make_ct())
    digest = hashlib.sha256(data).hexdigest()
    first = ingestor.ingest_bytes(data, "test", input_sha256=digest)
    assert first.status is IngestStatus.DEIDENTIFIED and first.input_sha256 == digest
    again = ingestor.ingest_bytes(data, "test")  # hashed here: the same record is found
    assert again.status is IngestStatus.DUPLICATE and again.output_sha256 == first.output_sha256
