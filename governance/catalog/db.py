"""Catalog engine, sessions and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from governance.settings import Settings, get_settings

__all__ = ["Catalog", "open_catalog"]

_MIGRATIONS = Path(__file__).with_name("migrations")


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

    def upgrade(self) -> None:
        """Bring the schema to the newest revision of every migration branch."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.set_main_option("path_separator", "os")
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

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
            catalog.upgrade()
            _CATALOGS[url] = catalog
            while len(_CATALOGS) > 8:
                _CATALOGS.popitem(last=False)
        return catalog


def open_catalog(settings: Settings | None = None) -> Catalog:
    """The migrated catalog for these settings (one per URL per process)."""
    return _cached((settings or get_settings()).resolved_catalog_url)
