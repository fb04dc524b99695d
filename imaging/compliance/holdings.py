"""What each store holds for a patient: the one interface erasure and retention ask.

The catalog and the content store are this package's own (:mod:`imaging.compliance.erasure_find`
reads them directly). Every other store that keeps patient-derived data (serving's sealed
inputs awaiting feedback, the FHIR outbox for the EMR, ...) implements :class:`PatientStore` in
the package that owns its layout and is declared as an entry point of the group
``radgate.patient_stores`` (``pyproject.toml``), so compliance finds it without importing a
layer above it. An item a store cannot attribute (damaged, sealed under another key) is
reported in :attr:`Holding.unreadable`, never passed over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from governance.keys import ProjectKey
    from governance.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "Holding",
    "PatientQuery",
    "PatientStore",
    "StoreUnavailable",
    "patient_stores",
    "unreadable_item",
]

ENTRY_POINT_GROUP = "radgate.patient_stores"


class StoreUnavailable(RuntimeError):
    """A declared patient store could not be loaded: erasure must not go on without it."""


@dataclass(frozen=True)
class PatientQuery:
    """Who is asked for: the original PatientID (memory only, never logged) and its pseudonym."""

    patient_id: str = field(repr=False)
    pseudonym: str = field(repr=False)
    key: ProjectKey = field(repr=False)
    settings: Settings = field(repr=False)


@dataclass
class Holding:
    """What one store holds for the patient: ``items`` are the store's own references (paths,
    ids) for :meth:`PatientStore.erase`, never shown; reports carry the count only."""

    store: str
    items: list[str] = field(default_factory=list, repr=False)
    unreadable: list[dict[str, str]] = field(default_factory=list)

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


def unreadable_item(store: str, item: str, exc: BaseException) -> dict[str, str]:
    """How an item that could not be attributed is reported: its store, a short id, the error
    type (never the message: it may quote the item's content)."""
    return {"store": store, "item": item[:16], "error": type(exc).__name__}


def patient_stores() -> list[PatientStore]:
    """The declared stores, in name order. Raises :class:`StoreUnavailable` when one cannot be
    loaded: an erasure that skipped a store would report a patient gone who is not."""
    points = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name)
    if not points:  # radgate declares its own: none means installed metadata older than the code
        raise StoreUnavailable(
            f"no {ENTRY_POINT_GROUP} entry points are installed: reinstall radgate (scripts/setup.sh)"
        )
    stores: list[PatientStore] = []
    for point in points:
        try:
            store = point.load()()
        except Exception as exc:
            why = type(exc).__name__
            raise StoreUnavailable(f"patient store {point.name!r} cannot be loaded: {why}") from exc
        if not isinstance(store, PatientStore):
            raise StoreUnavailable(f"patient store {point.name!r} does not implement PatientStore")
        stores.append(store)
    return stores
