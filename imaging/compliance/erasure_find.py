"""Finding everything derived from one patient, for erasure (see :mod:`imaging.compliance.erasure`).

The patient is found through the keyed lookup of the sealed map (or the keyed pseudonym
derivation on a re-run); from there the lineage, the quarantine (sealed bytes opened in memory
only), other domains' tables (by column convention), dataset manifests, the MLflow tags of runs
and model versions, and every declared store (:mod:`imaging.compliance.holdings`: serving's
sealed inputs, the FHIR outbox, the MLflow registry, ...), each asked through the same interface.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, inspect, or_, select
from sqlalchemy.orm import Session

from governance.catalog import Instance, LineageEvent, Pseudonym, QuarantineRecord, open_catalog
from governance.keyring import RECORD_QUARANTINE
from governance.keys import ProjectKey
from governance.settings import Settings
from governance.tags import Tag
from imaging.compliance.holdings import (
    SHOWN_MODEL_VERSION,
    SHOWN_RUN,
    Holding,
    PatientQuery,
    patient_stores,
    review_stores,
    unreadable_item,
)
from imaging.compliance.models import DatasetSupersession
from imaging.datasets import DatasetManifest, DatasetVersionRecord
from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind

__all__ = [
    "ERASURE_REVIEW_TAG",
    "ErasureError",
    "ErasurePlan",
    "datasets_holding",
    "find_patient_data",
    "key_values",
    "lineage_filter",
    "map_filter",
    "other_tables",
    "superseded_by",
]

ERASURE_REVIEW_TAG = Tag.ERASURE_REVIEW
# gateway_pulled is kept on purpose: it stops a later pull from the PACS fetching the patient again.
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


def key_values(column: str, pseudonym: str, inputs: set[str], outputs: set[str]) -> list[str]:
    if column == "patient_pseudonym":
        return [pseudonym]
    return sorted(inputs if column == "input_sha256" else outputs)


class ErasureError(RuntimeError):
    """The erasure was refused or cannot be carried out (message carries no PHI)."""


@dataclass
class ErasurePlan:
    """What an erasure removes and flags (hashes, pseudonymous ids and counts only)."""

    subject: str  # keyed digest of the patient pseudonym: proves which erasure, reveals nothing
    pseudonym: str = field(repr=False)
    instances: list[tuple[str, str, str]] = field(default_factory=list)  # sha256, store key, input sha256
    quarantine: list[tuple[str, str]] = field(default_factory=list)  # input sha256, sealed path
    holdings: list[Holding] = field(default_factory=list)  # what each declared patient store holds
    reviews: list[Holding] = field(default_factory=list)  # what each declared review store flags
    map_entries: int = 0
    lineage_rows: int = 0
    other_rows: dict[str, int] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    label_volumes: list[str] = field(default_factory=list)  # store keys of segmentation label volumes
    # Sealed items whose owner could not be read (damaged, or sealed under another key): they may
    # hold this patient, so they are reported for a person to resolve, never passed over.
    unreadable: list[dict[str, str]] = field(default_factory=list)

    @property
    def models(self) -> list[dict[str, str]]:
        """Model versions trained on an affected dataset version (name, version, dataset_version)."""
        return [
            {k: v for k, v in shown.items() if k != "kind"}
            for holding in self.reviews
            for shown in holding.shown
            if shown.get("kind") == SHOWN_MODEL_VERSION
        ]

    @property
    def runs(self) -> list[str]:
        """Ids of the runs trained on an affected dataset version."""
        return [
            shown["run_id"]
            for holding in self.reviews
            for shown in holding.shown
            if shown.get("kind") == SHOWN_RUN
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "instances": [sha[:12] for sha, _, _ in self.instances],
            "quarantined_inputs": [sha[:12] for sha, _ in self.quarantine],
            "stores": {h.store: h.count for h in self.holdings},
            "map_entries": self.map_entries,
            "lineage_rows": self.lineage_rows,
            "other_rows": self.other_rows,
            "dataset_versions": self.datasets,
            "model_versions": self.models,
            "runs": self.runs,
            "unreadable": self.unreadable,
        }


def _subject(key: ProjectKey, pseudonym: str) -> str:
    return key.mac("erasure-subject", pseudonym.encode()).hex()[:32]


def _pseudonym(session: Session, key: ProjectKey, patient_id: str) -> str:
    pseudonymizer = Pseudonymizer(key)
    lookup = pseudonymizer.lookup(PseudonymKind.PATIENT_ID, patient_id)
    row = session.scalar(
        select(Pseudonym.pseudonym).where(
            Pseudonym.kind == PseudonymKind.PATIENT_ID, Pseudonym.lookup == lookup
        )
    )
    # Without a map entry (a re-run after a partial erasure) the keyed derivation still finds it.
    return row or pseudonymizer.patient(patient_id)


def _quarantined(
    session: Session, key: ProjectKey, patient_id: str, unreadable: list[dict[str, str]]
) -> list[tuple[str, str]]:
    """Quarantined inputs whose sealed bytes carry this PatientID (unsealed in memory only);
    those that cannot be unsealed or parsed are added to ``unreadable``."""
    from pydicom import dcmread

    found = []
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
                found.append((rec.input_sha256, str(path)))
        except Exception as exc:  # reported, not skipped: the bytes may be this patient's
            unreadable.append(unreadable_item("quarantine", rec.input_sha256, exc))
    return found


def other_tables(session: Session) -> list[tuple[Table, str]]:
    """Catalog tables owned by other domains that hold patient-derived rows (by convention: a
    ``patient_pseudonym``, ``input_sha256`` or ``instance_sha256`` column, e.g. feedback cases)."""
    bind = session.get_bind()
    names = inspect(bind).get_table_names()
    meta = MetaData()
    out = []
    for name in names:
        if name in _HANDLED:
            continue
        table = Table(name, meta, autoload_with=bind)
        for column in _KEY_COLUMNS:
            if column in table.c:
                out.append((table, column))
    return out


def find_patient_data(session: Session, key: ProjectKey, patient_id: str, settings: Settings) -> ErasurePlan:
    pseudonym = _pseudonym(session, key, patient_id)
    plan = ErasurePlan(subject=_subject(key, pseudonym), pseudonym=pseudonym)
    instances = list(session.scalars(select(Instance).where(Instance.patient_pseudonym == pseudonym)))
    plan.instances = [(i.sha256, i.store_key, i.input_sha256) for i in instances]
    plan.quarantine = _quarantined(session, key, patient_id, plan.unreadable)
    query = PatientQuery(patient_id=patient_id, pseudonym=pseudonym, key=key, settings=settings)
    for store in patient_stores():
        holding = store.find(query)
        plan.holdings.append(holding)
        plan.unreadable.extend(holding.unreadable)
    uids = {i.study_instance_uid for i in instances} | {i.series_instance_uid for i in instances}
    uids |= {i.sop_instance_uid for i in instances}
    plan.map_entries = len(list(session.scalars(select(Pseudonym.id).where(map_filter(pseudonym, uids)))))
    inputs = {i.input_sha256 for i in instances} | {q for q, _ in plan.quarantine}
    outputs = {i.sha256 for i in instances}
    plan.lineage_rows = len(
        list(session.scalars(select(LineageEvent.id).where(lineage_filter(inputs, outputs))))
    )
    for table, column in other_tables(session):
        values = key_values(column, pseudonym, inputs, outputs)
        count = len(session.execute(select(table).where(table.c[column].in_(values))).all()) if values else 0
        if count:
            plan.other_rows[f"{table.name}.{column}"] = count
    for rec, hit, labels in datasets_holding(session, pseudonym):
        plan.label_volumes.extend(sha for sha in labels if sha not in plan.label_volumes)
        plan.datasets.append(
            {
                "id": rec.id,
                "name": rec.name,
                "items": hit,
                "superseded_by": superseded_by(rec.id, session=session),
            }
        )
    for reviewer in review_stores():
        holding = reviewer.find(query)
        plan.reviews.append(holding)
        plan.unreadable.extend(holding.unreadable)
    return plan


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


def map_filter(pseudonym: str, uids: set[str]) -> Any:
    conditions = [Pseudonym.pseudonym == pseudonym]
    if uids:
        conditions.append(Pseudonym.pseudonym.in_(sorted(uids)))
    return or_(*conditions)


def lineage_filter(inputs: set[str], outputs: set[str]) -> Any:
    return or_(
        LineageEvent.input_sha256.in_(sorted(inputs) or [""]),
        LineageEvent.output_sha256.in_(sorted(outputs) or [""]),
    )


def superseded_by(version_id: str, *, session: Session | None = None) -> str | None:
    """The successor of a superseded dataset version ("" when it has none), or None if current."""

    def lookup(s: Session) -> str | None:
        row = s.scalar(select(DatasetSupersession).where(DatasetSupersession.version_id == version_id))
        return None if row is None else (row.successor_id or "")

    if session is not None:
        return lookup(session)
    with open_catalog().session() as s:
        return lookup(s)
