"""The catalog database (SQLAlchemy; SQLite by default, PostgreSQL for scale) and its migrations."""

from governance.catalog.db import Catalog, open_catalog
from governance.catalog.models import Base, Instance, LineageEvent, Pseudonym, QuarantineRecord, utcnow

__all__ = [
    "Base",
    "Catalog",
    "Instance",
    "LineageEvent",
    "Pseudonym",
    "QuarantineRecord",
    "open_catalog",
    "utcnow",
]
