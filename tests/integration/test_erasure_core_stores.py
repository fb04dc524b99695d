"""The catalog and the content store are declared patient stores like any other: erasure finds
them by entry point and refuses to run without them, the catalog finds and erases within the
caller's transaction (nothing of it is removed unless that transaction commits), the content
store gives up exactly the patient's objects and their local copies, and a whole erasure on
PostgreSQL and S3 leaves none of the patient's rows or objects, everyone else's untouched, and
runs again harmlessly. Real catalogs (SQLite, PostgreSQL) and stores (local, moto's S3 server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from governance.catalog import Instance, LineageEvent, Pseudonym, open_catalog
from governance.keys import load_project_key
from governance.settings import get_settings
from imaging.compliance.holdings import (
    OWN_STORES,
    CatalogStore,
    PatientQuery,
    PatientStore,
    StoreUnavailable,
    catalog_stores,
    declared_stores,
    patient_stores,
)
from imaging.deid import Pseudonymizer
from imaging.store import ContentStore
from tests.integration.test_compliance_support import ingest_demo
from tests.integration.test_s3_store import BUCKET, s3_server, s3_store

pytestmark = pytest.mark.integration
__all__ = ["s3_server", "s3_store"]


def _query(patient_id: str) -> PatientQuery:
    settings = get_settings()
    key = load_project_key(settings)
    pseudonym = Pseudonymizer(key).patient(patient_id)
    return PatientQuery(patient_id=patient_id, pseudonym=pseudonym, key=key, settings=settings)


def _patients(home: Path, count: int) -> list[str]:
    """Ingest ``count`` synthetic patients (2 instances each); their original PatientIDs."""
    studies = ingest_demo(home, patients=count, images=2, size=32).demo.studies
    patients = list(dict.fromkeys(s.patient_id for s in studies))
    assert len(patients) == count
    return patients


def _rows(pseudonym: str) -> dict[str, int]:
    """The patient's instance rows and map entries, and all lineage rows."""
    with open_catalog().session() as session:
        return {
            "instances": session.scalar(
                select(func.count()).select_from(Instance).where(Instance.patient_pseudonym == pseudonym)
            )
            or 0,
            "map": session.scalar(
                select(func.count()).select_from(Pseudonym).where(Pseudonym.pseudonym == pseudonym)
            )
            or 0,
            "lineage": session.scalar(select(func.count()).select_from(LineageEvent)) or 0,
        }


def _keys(pseudonym: str) -> list[str]:
    with open_catalog().session() as session:
        mine = select(Instance.store_key).where(Instance.patient_pseudonym == pseudonym)
        return sorted(session.scalars(mine))


def test_the_catalog_and_the_object_store_are_declared_stores() -> None:
    assert [s.name for s in catalog_stores()] == ["catalog"]
    assert all(isinstance(s, CatalogStore) and not isinstance(s, PatientStore) for s in catalog_stores())
    assert "object-store" in {s.name for s in patient_stores()}
    assert set(OWN_STORES) <= {s.name for s in declared_stores()}


def test_metadata_without_the_catalog_store_stops_erasure_before_anything_is_asked(
    radgate_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imaging.compliance.holdings as holdings
    from imaging.compliance.erasure_find import find_patient_data

    (patient,) = _patients(radgate_home, 1)
    query = _query(patient)
    before = _rows(query.pseudonym)
    stale = [p for p in holdings.entry_points(group=holdings.ENTRY_POINT_GROUP) if p.name != "catalog"]
    monkeypatch.setattr(holdings, "entry_points", lambda group: stale)  # metadata older than the code
    with pytest.raises(StoreUnavailable, match=r"catalog.*reinstall"):
        holdings.declared_stores()
    with open_catalog().session() as session, pytest.raises(StoreUnavailable):
        find_patient_data(session, query.key, patient, query.settings)
    assert _rows(query.pseudonym) == before and before["instances"] == 2


def test_the_catalog_erases_only_within_a_committed_transaction(radgate_home: Path) -> None:
    from imaging.compliance.stores import CatalogRows

    mine, theirs = (_query(patient) for patient in _patients(radgate_home, 2))
    before, others = _rows(mine.pseudonym), _rows(theirs.pseudonym)
    assert before["instances"] == 2 and before["map"] >= 1
    store = CatalogRows()
    with open_catalog().session() as session:
        holding = store.find_in(session, mine)
    assert len(holding.instances) == 2 and holding.unreadable == []
    assert holding.map_entries >= 2 + 2 * 4 and holding.lineage_rows >= 2
    assert holding.count == 2 + holding.map_entries + holding.lineage_rows
    # A transaction that fails after the catalog's erase removes nothing.
    with pytest.raises(RuntimeError, match="after the catalog"), open_catalog().session() as session:
        assert store.erase_in(session, holding) == holding.count
        raise RuntimeError("a later step failed after the catalog erased")
    assert _rows(mine.pseudonym) == before
    with open_catalog().session() as session:
        store.erase_in(session, holding)
    after = _rows(mine.pseudonym)
    assert after["instances"] == 0 and after["map"] == 0
    assert after["lineage"] == before["lineage"] - holding.lineage_rows
    assert _rows(theirs.pseudonym)["instances"] == others["instances"] == 2
    with open_catalog().session() as session:
        again = store.find_in(session, mine)
        assert again.count == 0 and store.erase_in(session, again) == 0  # a re-run: nothing left


def test_the_object_store_gives_up_exactly_the_patients_objects(radgate_home: Path) -> None:
    from imaging.compliance.stores import ContentObjects

    mine, theirs = (_query(patient) for patient in _patients(radgate_home, 2))
    content = ContentStore.from_settings()
    keys, others = _keys(mine.pseudonym), _keys(theirs.pseudonym)
    assert len(keys) == 2 and all(content.exists(k) for k in keys + others)
    store = ContentObjects()
    holding = store.find(mine)
    assert sorted(holding.items) == keys and holding.unreadable == []
    assert store.erase(holding) == 2
    assert not any(content.exists(k) for k in keys) and all(content.exists(k) for k in others)
    assert store.find(mine).items == []  # a re-run finds nothing it removed before
    assert store.erase(holding) == 0  # and removing again is harmless


@pytest.fixture
def scaled_out(postgres: Any, s3_store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The catalog on PostgreSQL and the content store on S3, selected as an operator would;
    the store's prefix in the bucket."""
    monkeypatch.setenv("RADGATE_CATALOG_URL", str(postgres.create_database("erasure_core_stores")))
    get_settings.cache_clear()
    return s3_store.removeprefix(f"s3://{BUCKET}/")


def test_erasure_on_postgresql_and_s3_leaves_none_of_the_patients_rows_or_objects(
    radgate_home: Path, scaled_out: str, s3_server: Any
) -> None:
    from governance.testing import create_cast
    from imaging.compliance import erase_patient, plan_erasure

    target, *rest = _patients(radgate_home, 3)
    assert open_catalog().engine.dialect.name == "postgresql"
    mine, others = _query(target), [_query(patient) for patient in rest]
    keys = _keys(mine.pseudonym)
    kept = sorted(k for other in others for k in _keys(other.pseudonym))
    assert len(keys) == 2 and len(kept) == 4

    def objects() -> set[str]:  # the keys of the objects in the bucket
        return {name.rsplit("/", 1)[-1].removesuffix(".dcm") for name in s3_server.keys(BUCKET, scaled_out)}

    assert objects() == set(keys) | set(kept)
    content = ContentStore.from_settings()
    cached = content.path(keys[0])  # a reader's verified local copy of one of the patient's objects
    assert cached.exists()
    cast = create_cast()
    plan = plan_erasure(target, principal=cast["broker"])
    stores = {h.store: h.count for h in plan.holdings}
    assert stores["object-store"] == 2 and stores["catalog"] >= 2 + plan.map_entries
    erasure_id, plan, _ = erase_patient(target, principal=cast["broker"], approver=cast["admin"], reason="r")
    assert objects() == set(kept) and not cached.exists()
    assert _rows(mine.pseudonym)["instances"] == 0 and _rows(mine.pseudonym)["map"] == 0
    assert all(_rows(other.pseudonym)["instances"] == 2 for other in others)
    # Run again: nothing left to find, nothing of anyone else's removed.
    again = plan_erasure(target, principal=cast["broker"])
    assert {h.store: h.count for h in again.holdings}["object-store"] == 0
    assert again.catalog.count == 0 and again.unreadable == []
    second, _, _ = erase_patient(target, principal=cast["broker"], approver=cast["admin"], reason="r")
    assert second != erasure_id and objects() == set(kept)
