"""Catalog engine, sessions and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from governance.settings import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection

__all__ = ["HEAD_REVISION", "Catalog", "CatalogUnavailable", "migration_config", "open_catalog"]

_MIGRATIONS = Path(__file__).with_name("migrations")

# Databases migrated before the history was one line recorded one row per branch head in
# alembic_version. Every branch started at 0001_imaging, except 0007 (at 0002_governance), and
# the gateway revision was called 0003_gateway.
_BRANCH_ROOTS = {"0001_imaging": None, "0002_governance": "0007_audit_signatures"}
_RENAMED = {"0003_gateway": "0004_gateway"}

#: The head of the migration history (a test holds it equal to Alembic's head). A catalog that
#: already records it is opened without importing Alembic (about 0.3 s of imports), which is
#: what a light command or a replica's first gate decision would otherwise spend.
HEAD_REVISION = "0009_lineage_source_index"


def migration_config() -> Config:
    """The Alembic configuration of the catalog's migrations (``script_location`` set)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def _linearize(connection: Connection, config: Config) -> None:
    """Rewrite a multi-row ``alembic_version`` (the former branched history) as the one revision
    of the linear history it amounts to. Raises :class:`RuntimeError` when the recorded heads
    leave a gap in the linear order (a revision that was never applied would be skipped)."""
    from alembic.script import ScriptDirectory

    if not inspect(connection).has_table("alembic_version"):
        return
    rows = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    if len(rows) <= 1 and not set(rows) & set(_RENAMED):
        return
    recorded = {_RENAMED.get(row, row) for row in rows}
    applied = recorded | {root for root, only_with in _BRANCH_ROOTS.items() if only_with in (None, *recorded)}
    chain = [script.revision for script in ScriptDirectory.from_config(config).walk_revisions()][::-1]
    unknown = recorded - set(chain)
    if unknown:
        raise RuntimeError(f"catalog records unknown migration revisions: {sorted(unknown)}")
    latest = max(chain.index(revision) for revision in recorded)
    missing = [revision for revision in chain[: latest + 1] if revision not in applied]
    if missing:
        raise RuntimeError(f"catalog migrations cannot be made linear: {missing} were never applied")
    connection.execute(text("DELETE FROM alembic_version"))
    connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": chain[latest]})


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the UI, `radgate catalog`) run while an ingest writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Catalog:
    """The catalog database: one engine, a session factory and the migration entry point."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def at_head(self) -> bool:
        """Whether the database records exactly :data:`HEAD_REVISION` (nothing to migrate)."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return False
            rows = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
        return rows == [HEAD_REVISION]

    def upgrade(self) -> None:
        """Bring the schema to the head of the (linear) migration history."""
        if self.at_head():
            return
        from alembic import command

        config = migration_config()
        with self.engine.begin() as connection:
            _linearize(connection, config)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transactional session: committed on success, rolled back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


class CatalogUnavailable(Exception):
    """The catalog database cannot be reached (down, refused, wrong host, TLS or login refused).
    The message names the database without its password, and the driver's first line."""

    def __init__(self, url: str, exc: OperationalError) -> None:
        where = make_url(url).render_as_string(hide_password=True)
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        super().__init__(
            f"the catalog database {where} cannot be reached"
            + (f" ({reason[0][:300]})" if reason else "")
            + ": is it running, and is RADGATE_CATALOG_URL right?"
        )


_CATALOGS: OrderedDict[str, Catalog] = OrderedDict()  # the 8 most recent URLs, migrated
_CATALOGS_LOCK = threading.Lock()


def _cached(url: str) -> Catalog:
    """One migrated catalog per URL. Threads that open the same new URL at once wait for one
    migration (an unlocked cache let two threads migrate the same database together, which
    broke the migration and every write after it)."""
    catalog = _CATALOGS.get(url)
    if catalog is not None:
        return catalog
    with _CATALOGS_LOCK:
        catalog = _CATALOGS.get(url)
        if catalog is None:
            catalog = Catalog(url)
            try:
                catalog.upgrade()
            except OperationalError as exc:  # the first connection a process makes to it
                raise CatalogUnavailable(url, exc) from None
            _CATALOGS[url] = catalog
            while len(_CATALOGS) > 8:
                _CATALOGS.popitem(last=False)
        return catalog


def open_catalog(settings: Settings | None = None) -> Catalog:
    """The migrated catalog for these settings (one per URL per process)."""
    return _cached((settings or get_settings()).resolved_catalog_url)
