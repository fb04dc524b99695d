"""Finding everything derived from one patient, for erasure (see :mod:`imaging.compliance.erasure`).

The patient is found through the keyed lookup of the sealed map (or the keyed pseudonym
derivation on a re-run); from there every declared store (:mod:`imaging.compliance.holdings`:
the catalog, the content store, serving's sealed inputs, the FHIR outbox, the MLflow registry,
...) is asked through the same interface, and the dataset versions holding the patient are
listed for supersession.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.catalog import Pseudonym, open_catalog
from governance.keys import ProjectKey
from governance.settings import Settings
from governance.tags import Tag
from imaging.compliance.holdings import (
    SHOWN_MODEL_VERSION,
    SHOWN_RUN,
    CatalogStore,
    Holding,
    PatientQuery,
    ReviewStore,
    declared_stores,
)
from imaging.compliance.models import DatasetSupersession
from imaging.compliance.stores import CatalogHolding, datasets_holding
from imaging.deid.pseudonym import Pseudonymizer, PseudonymKind

__all__ = [
    "ERASURE_REVIEW_TAG",
    "ErasureError",
    "ErasurePlan",
    "find_patient_data",
    "superseded_by",
]

ERASURE_REVIEW_TAG = Tag.ERASURE_REVIEW


class ErasureError(RuntimeError):
    """The erasure was refused or cannot be carried out (message carries no PHI)."""


@dataclass
class ErasurePlan:
    """What an erasure removes and flags (hashes, pseudonymous ids and counts only)."""

    subject: str  # keyed digest of the patient pseudonym: proves which erasure, reveals nothing
    pseudonym: str = field(repr=False)
    holdings: list[Holding] = field(default_factory=list)  # what each catalog and patient store holds
    reviews: list[Holding] = field(default_factory=list)  # what each declared review store flags
    datasets: list[dict[str, Any]] = field(default_factory=list)
    # Sealed items whose owner could not be read (damaged, or sealed under another key): they may
    # hold this patient, so they are reported for a person to resolve, never passed over.
    unreadable: list[dict[str, str]] = field(default_factory=list)

    @property
    def catalog(self) -> CatalogHolding:
        """What the catalog holds (its rows by kind), read by the report below."""
        found = [h for h in self.holdings if isinstance(h, CatalogHolding)]
        return found[0] if found else CatalogHolding("catalog", pseudonym=self.pseudonym)

    @property
    def instances(self) -> list[tuple[str, str, str]]:
        """Stored instances: sha256, store key, input sha256."""
        return self.catalog.instances

    @property
    def quarantine(self) -> list[tuple[str, str]]:
        """Quarantined inputs: input sha256, sealed path."""
        return self.catalog.quarantine

    @property
    def label_volumes(self) -> list[str]:
        """Store keys of the label volumes derived from the patient's series."""
        return self.catalog.label_volumes

    @property
    def map_entries(self) -> int:
        return self.catalog.map_entries

    @property
    def lineage_rows(self) -> int:
        return self.catalog.lineage_rows

    @property
    def other_rows(self) -> dict[str, int]:
        """Rows of other domains' catalog tables, by ``table.column``."""
        return self.catalog.other_rows

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


def find_patient_data(session: Session, key: ProjectKey, patient_id: str, settings: Settings) -> ErasurePlan:
    """Ask every declared store what it holds for ``patient_id`` (catalog stores within
    ``session``), and list the dataset versions holding the patient. Every store is loaded and
    asked before anything is removed: one that cannot be loaded stops the erasure here."""
    pseudonym = _pseudonym(session, key, patient_id)
    plan = ErasurePlan(subject=_subject(key, pseudonym), pseudonym=pseudonym)
    query = PatientQuery(patient_id=patient_id, pseudonym=pseudonym, key=key, settings=settings)
    for store in declared_stores():
        holding = store.find_in(session, query) if isinstance(store, CatalogStore) else store.find(query)
        (plan.reviews if isinstance(store, ReviewStore) else plan.holdings).append(holding)
        plan.unreadable.extend(holding.unreadable)
    for rec, hit, _ in datasets_holding(session, pseudonym):
        plan.datasets.append(
            {
                "id": rec.id,
                "name": rec.name,
                "items": hit,
                "superseded_by": superseded_by(rec.id, session=session),
            }
        )
    return plan


def superseded_by(version_id: str, *, session: Session | None = None) -> str | None:
    """The successor of a superseded dataset version ("" when it has none), or None if current."""

    def lookup(s: Session) -> str | None:
        row = s.scalar(select(DatasetSupersession).where(DatasetSupersession.version_id == version_id))
        return None if row is None else (row.successor_id or "")

    if session is not None:
        return lookup(session)
    with open_catalog().session() as s:
        return lookup(s)
