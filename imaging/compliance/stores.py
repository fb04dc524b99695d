"""Imaging's own patient stores, declared as ``radgate.patient_stores`` entry points like every
other store (:mod:`imaging.compliance.holdings`), so that erasure and retention ask them the same
way:

- ``catalog`` (:class:`CatalogRows`, a :class:`~imaging.compliance.holdings.CatalogStore`): the
  patient's instance rows, map entries (patient, and each instance's study/series/SOP UIDs),
  lineage rows, quarantine records with their sealed inputs, and rows of other domains' tables
  keyed by the patient (by column convention, e.g. feedback cases). Found and erased within the
  erasure's catalog transaction;
- ``object-store`` (:class:`ContentObjects`, a :class:`~imaging.compliance.holdings.PatientStore`):
  the de-identified objects of the patient's instances and the label volumes derived from their
  series, in the content store (local or S3), with any local copy of them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, delete, func, inspect, or_, select
from sqlalchemy.orm import Session

from governance.catalog import Instance, LineageEvent, Pseudonym, QuarantineRecord, open_catalog
from governance.keyring import RECORD_QUARANTINE
from governance.keys import ProjectKey
from governance.settings import Settings
from imaging.compliance.holdings import Holding, PatientQuery, unreadable_item
from imaging.datasets import DatasetManifest, DatasetVersionRecord
from imaging.store import ContentStore, StoreError

__all__ = [
    "CatalogHolding",
    "CatalogRows",
    "ContentObjects",
    "ObjectHolding",
    "datasets_holding",
    "other_tables",
]

# Tables the catalog store handles by name, or keeps on purpose: gateway_pulled stops a later
# pull from the PACS fetching the patient again; the erasure's own records and the audit log
# name no patient.
_HANDLED = {
    "gateway_pulled",
    "instances",
    "quarantine",
    "lineage",
    "pseudonyms",
    "audit_log",
    "users",
    "dataset_versions",
    "dataset_supersessions",
    "erasures",
    "alembic_version",
}

#: Columns by which another domain's table names patient-derived rows: the pseudonym, the hash
#: of an original input, or the content hash of a stored (de-identified) instance.
_KEY_COLUMNS = ("patient_pseudonym", "input_sha256", "instance_sha256")


def datasets_holding(
    session: Session, pseudonym: str
) -> Iterator[tuple[DatasetVersionRecord, int, list[str]]]:
    """Each dataset version whose manifest holds the patient: the record, how many items and
    series of the patient it holds, and the store keys of the patient's label volumes."""
    for rec in session.scalars(select(DatasetVersionRecord)):
        manifest = DatasetManifest.model_validate_json(rec.manifest_json)
        hit = sum(1 for item in manifest.items if item.patient == pseudonym)
        series = [s for s in manifest.series or [] if s.patient == pseudonym]
        if hit + len(series):
            yield rec, hit + len(series), [s.label_sha256 for s in series]


def other_tables(session: Session) -> list[tuple[Table, str]]:
    """Catalog tables owned by other domains that hold patient-derived rows (by convention: a
    ``patient_pseudonym``, ``input_sha256`` or ``instance_sha256`` column, e.g. feedback cases)."""
    bind = session.get_bind()
    meta = MetaData()
    out: list[tuple[Table, str]] = []
    for name in inspect(bind).get_table_names():
        if name in _HANDLED:
            continue
        table = Table(name, meta, autoload_with=bind)
        out.extend((table, column) for column in _KEY_COLUMNS if column in table.c)
    return out


@dataclass
class CatalogHolding(Holding):
    """What the catalog holds for the patient, by kind of row (hashes and counts; the pseudonym
    and UIDs are kept for :meth:`CatalogRows.erase_in`, never shown)."""

    pseudonym: str = field(default="", repr=False)
    instances: list[tuple[str, str, str]] = field(default_factory=list)  # sha256, store key, input sha256
    quarantine: list[tuple[str, str]] = field(default_factory=list)  # input sha256, sealed path
    uids: set[str] = field(default_factory=set, repr=False)  # the instances' study/series/SOP UIDs
    label_volumes: list[str] = field(default_factory=list)  # derived outputs named by lineage rows
    map_entries: int = 0
    lineage_rows: int = 0
    other_rows: dict[str, int] = field(default_factory=dict)  # "table.column" -> rows

    @property
    def inputs(self) -> set[str]:
        """Hashes of the patient's original inputs (stored or quarantined)."""
        return {i[2] for i in self.instances} | {q for q, _ in self.quarantine}

    @property
    def outputs(self) -> set[str]:
        """Hashes of what was derived from them (stored instances, label volumes)."""
        return {i[0] for i in self.instances} | set(self.label_volumes)

    @property
    def count(self) -> int:
        """Rows found, of every kind."""
        rows = len(self.instances) + len(self.quarantine) + self.map_entries + self.lineage_rows
        return rows + sum(self.other_rows.values())


def _key_values(column: str, holding: CatalogHolding) -> list[str]:
    if column == "patient_pseudonym":
        return [holding.pseudonym]
    return sorted(holding.inputs if column == "input_sha256" else holding.outputs)


def _map_filter(holding: CatalogHolding) -> Any:
    return or_(Pseudonym.pseudonym == holding.pseudonym, Pseudonym.pseudonym.in_(sorted(holding.uids)))


def _lineage_filter(holding: CatalogHolding) -> Any:
    return or_(
        LineageEvent.input_sha256.in_(sorted(holding.inputs)),
        LineageEvent.output_sha256.in_(sorted(holding.outputs)),
    )


def _quarantined(session: Session, key: ProjectKey, patient_id: str, holding: CatalogHolding) -> None:
    """Quarantined inputs whose sealed bytes carry this PatientID (unsealed in memory only);
    those that cannot be unsealed or parsed go to ``holding.unreadable``."""
    from pydicom import dcmread

    for rec in session.scalars(select(QuarantineRecord)):
        path = Path(rec.path)
        if path.suffix != ".sealed" or not path.exists():
            continue
        try:
            data = key.unseal(path.read_bytes(), rec.input_sha256.encode(), record=RECORD_QUARANTINE)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            if str(ds.get("PatientID", "")).strip() == patient_id.strip():
                holding.quarantine.append((rec.input_sha256, str(path)))
        except Exception as exc:  # reported, not skipped: the bytes may be this patient's
            holding.unreadable.append(unreadable_item("quarantine", rec.input_sha256, exc))


class CatalogRows:
    """The catalog's rows about the patient, erased in the erasure's own transaction."""

    name = "catalog"

    def find_in(self, session: Session, query: PatientQuery) -> CatalogHolding:
        holding = CatalogHolding(self.name, pseudonym=query.pseudonym)
        for i in session.scalars(select(Instance).where(Instance.patient_pseudonym == query.pseudonym)):
            holding.instances.append((i.sha256, i.store_key, i.input_sha256))
            holding.uids |= {i.study_instance_uid, i.series_instance_uid, i.sop_instance_uid}
        _quarantined(session, query.key, query.patient_id, holding)
        for _, _, labels in datasets_holding(session, query.pseudonym):
            holding.label_volumes.extend(sha for sha in labels if sha not in holding.label_volumes)
        count = select(func.count()).select_from(Pseudonym).where(_map_filter(holding))
        holding.map_entries = session.scalar(count) or 0
        count = select(func.count()).select_from(LineageEvent).where(_lineage_filter(holding))
        holding.lineage_rows = session.scalar(count) or 0
        for table, column in other_tables(session):
            values = _key_values(column, holding)
            where = table.c[column].in_(values)
            rows = session.scalar(select(func.count()).select_from(table).where(where)) if values else 0
            if rows:
                holding.other_rows[f"{table.name}.{column}"] = rows
        return holding

    def erase_in(self, session: Session, holding: Holding) -> int:
        if not isinstance(holding, CatalogHolding):
            raise TypeError("the catalog erases only what its own find_in returned")
        for table, column in other_tables(session):
            values = _key_values(column, holding)
            if values:
                session.execute(delete(table).where(table.c[column].in_(values)))
        session.execute(delete(LineageEvent).where(_lineage_filter(holding)))
        session.execute(delete(Pseudonym).where(_map_filter(holding)))
        quarantined = [sha for sha, _ in holding.quarantine]
        session.execute(delete(QuarantineRecord).where(QuarantineRecord.input_sha256.in_(quarantined)))
        # Exactly the rows found: one ingested since stays, with its object, for a re-run to find.
        found = [sha for sha, _, _ in holding.instances]
        session.execute(delete(Instance).where(Instance.sha256.in_(found)))
        # The sealed originals last, once their rows are gone from this transaction; a failure
        # here rolls the transaction back.
        for _, sealed in holding.quarantine:
            Path(sealed).unlink(missing_ok=True)
            Path(sealed).with_suffix(".json").unlink(missing_ok=True)
        return holding.count

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        # Rows live as long as what they describe; the compliance check's own threshold reviews
        # old quarantined inputs (imaging.compliance.retention).
        return {}


@dataclass
class ObjectHolding(Holding):
    """Store keys of the patient's objects, and the settings naming the store they are in."""

    settings: Settings | None = field(default=None, repr=False)


class ContentObjects:
    """The content store's objects derived from the patient, removed before the catalog rows
    that name them (a crash leaves rows by which a re-run finds them again)."""

    name = "object-store"

    def find(self, query: PatientQuery) -> ObjectHolding:
        holding = ObjectHolding(self.name, settings=query.settings)
        pseudonym = query.pseudonym
        with open_catalog(query.settings).session() as session:
            mine = select(Instance.store_key).where(Instance.patient_pseudonym == pseudonym)
            keys = list(session.scalars(mine))
            keys.extend(sha for _, _, labels in datasets_holding(session, pseudonym) for sha in labels)
        store = ContentStore.from_settings(query.settings)
        for key in dict.fromkeys(keys):  # a label volume two dataset versions name is one object
            try:
                if store.exists(key):  # what is held: a re-run finds nothing it removed before
                    holding.items.append(key)
            except StoreError as exc:  # a key that is no object name: reported, not skipped
                holding.unreadable.append(unreadable_item(self.name, key, exc))
        return holding

    def erase(self, holding: Holding) -> int:
        if not isinstance(holding, ObjectHolding) or holding.settings is None:
            raise TypeError("the object store erases only what its own find returned")
        store = ContentStore.from_settings(holding.settings)
        return sum(store.delete(key) for key in holding.items)

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        # De-identified objects are kept while the catalog names them: erasure removes a patient's.
        return {}
