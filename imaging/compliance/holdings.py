"""What each store holds for a patient: the one interface erasure and retention ask.

Every store that keeps patient-derived data is declared as an entry point of the group
``radgate.patient_stores`` (``pyproject.toml``) by the package that owns its layout, so that
compliance finds it without importing a layer above it, and asks each one the same way: the
catalog and the content store (:mod:`imaging.compliance.stores`) as much as serving's. A store
is one of three kinds:

- :class:`CatalogStore` (the catalog's rows): found and erased within the caller's database
  session, so that its rows go in the one transaction that records the erasure;
- :class:`PatientStore` (the content store's objects, serving's sealed inputs awaiting
  feedback, the FHIR outbox, ...): what it holds is removed before that transaction, so a crash
  leaves catalog rows that a re-run finds;
- :class:`ReviewStore` (the MLflow registry's runs and model versions trained on the patient's
  data): what it holds is flagged for review, naming the erasure, only after the catalog
  transaction that records the erasure has committed.

An item a store cannot attribute (damaged, sealed under another key) is reported in
:attr:`Holding.unreadable`, and an item a review store cannot flag is returned by
:meth:`ReviewStore.flag`: neither is passed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from governance.keys import ProjectKey
    from governance.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "OWN_STORES",
    "SHOWN_MODEL_VERSION",
    "SHOWN_RUN",
    "AnyStore",
    "CatalogStore",
    "Erasure",
    "Holding",
    "PatientQuery",
    "PatientStore",
    "ReviewStore",
    "StoreUnavailable",
    "catalog_stores",
    "declared_stores",
    "patient_stores",
    "review_stores",
    "unreadable_item",
]

ENTRY_POINT_GROUP = "radgate.patient_stores"

#: The stores of imaging itself (:mod:`imaging.compliance.stores`). Every installed radgate
#: declares them: one missing means installed metadata older than the code, and an erasure
#: without them would leave the patient's rows and objects behind.
OWN_STORES = ("catalog", "object-store")

#: The ``kind`` of a :attr:`Holding.shown` entry: a registered model version (``name``,
#: ``version``, ``dataset_version``) or a run (``run_id``).
SHOWN_MODEL_VERSION = "model-version"
SHOWN_RUN = "run"


class StoreUnavailable(RuntimeError):
    """A declared patient store could not be loaded: erasure must not go on without it."""


@dataclass(frozen=True)
class PatientQuery:
    """Who is asked for: the original PatientID (memory only, never logged) and its pseudonym."""

    patient_id: str = field(repr=False)
    pseudonym: str = field(repr=False)
    key: ProjectKey = field(repr=False)
    settings: Settings = field(repr=False)


@dataclass(frozen=True)
class Erasure:
    """The committed erasure a review store's flags name (an opaque id and a keyed subject
    digest, never the patient's identifiers) and who carries it out."""

    id: str
    subject: str
    actor: str
    role: str
    settings: Settings = field(repr=False)


@dataclass
class Holding:
    """What one store holds for the patient: ``items`` are the store's own references (paths,
    ids) for :meth:`PatientStore.erase` or :meth:`ReviewStore.flag`, never shown; reports carry
    the count only, and ``shown``: what a review store's items are, when that is no patient data
    (a model version's name, version and training dataset version; a run's id)."""

    store: str
    items: list[str] = field(default_factory=list, repr=False)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    shown: list[dict[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.items)


@runtime_checkable
class PatientStore(Protocol):
    """A store that can say what it holds for a patient, erase it, and report retention."""

    name: str

    def find(self, query: PatientQuery) -> Holding:
        """Everything this store holds for ``query``'s patient (unattributable items reported)."""
        ...

    def erase(self, holding: Holding) -> int:
        """Remove what :meth:`find` returned; the number of items removed (idempotent)."""
        ...

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        """Counts of items kept past their limit (``*_overdue``, ``*_orphaned``): 0 is compliant."""
        ...


@runtime_checkable
class CatalogStore(Protocol):
    """A store whose items are rows of the catalog database. It finds and erases within the
    caller's session, so that what it removes is committed with the erasure's record or not at
    all, and only after every other store has been asked and emptied."""

    name: str

    def find_in(self, session: Session, query: PatientQuery) -> Holding:
        """Everything this store holds for ``query``'s patient, read in ``session``."""
        ...

    def erase_in(self, session: Session, holding: Holding) -> int:
        """Remove what :meth:`find_in` returned within ``session``, without committing (the
        caller commits it with the erasure's record); the number of items removed (idempotent)."""
        ...

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        """As :meth:`PatientStore.retention`."""
        ...


@runtime_checkable
class ReviewStore(Protocol):
    """A store whose items derive from the patient's data without holding it (models trained on
    it): they are flagged for review once the erasure is recorded, not removed."""

    name: str

    def find(self, query: PatientQuery) -> Holding:
        """Every item of this store derived from ``query``'s patient's data."""
        ...

    def flag(self, holding: Holding, erasure: Erasure) -> list[dict[str, str]]:
        """Flag what :meth:`find` returned for review, naming ``erasure``; the items it could not
        flag (as :func:`unreadable_item`), never passed over."""
        ...

    def retention(self, settings: Settings, now: datetime) -> dict[str, int]:
        """As :meth:`PatientStore.retention`."""
        ...


def unreadable_item(store: str, item: str, exc: BaseException) -> dict[str, str]:
    """How an item that could not be attributed is reported: its store, a short id, the error
    type (never the message: it may quote the item's content)."""
    return {"store": store, "item": item[:16], "error": type(exc).__name__}


#: A declared store of any of the three kinds.
AnyStore = CatalogStore | PatientStore | ReviewStore


def declared_stores() -> list[AnyStore]:
    """Every declared store, loaded, in name order. Raises :class:`StoreUnavailable` when one
    cannot be loaded or is of no kind, or when one of :data:`OWN_STORES` is not declared: an
    erasure that skipped a store would report a patient gone who is not."""
    points = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name)
    missing = [name for name in OWN_STORES if name not in {p.name for p in points}]
    if missing:  # radgate declares its own: one missing means installed metadata older than the code
        raise StoreUnavailable(
            f"{ENTRY_POINT_GROUP} entry points {', '.join(missing)} are not installed: "
            "reinstall radgate (scripts/setup.sh)"
        )
    stores: list[AnyStore] = []
    for point in points:
        try:
            store = point.load()()
        except Exception as exc:
            why = type(exc).__name__
            raise StoreUnavailable(f"patient store {point.name!r} cannot be loaded: {why}") from exc
        if not isinstance(store, CatalogStore | PatientStore | ReviewStore):
            raise StoreUnavailable(
                f"patient store {point.name!r} implements none of CatalogStore, PatientStore, ReviewStore"
            )
        stores.append(store)
    return stores


def catalog_stores() -> list[CatalogStore]:
    """The declared stores erasure empties within its catalog transaction, in name order."""
    return [store for store in declared_stores() if isinstance(store, CatalogStore)]


def patient_stores() -> list[PatientStore]:
    """The declared stores whose holdings erasure removes before its catalog transaction, in name
    order (see :func:`declared_stores`)."""
    return [store for store in declared_stores() if isinstance(store, PatientStore)]


def review_stores() -> list[ReviewStore]:
    """The declared stores whose holdings erasure flags for review, in name order."""
    return [store for store in declared_stores() if isinstance(store, ReviewStore)]
