"""The catalog's Alembic history is one line with one head; upgrade from an empty database and
downgrade to nothing work on SQLite and on PostgreSQL 15 (a private cluster on 127.0.0.1); a
database migrated under the former branched history is carried onto the line."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from governance.catalog.db import HEAD_REVISION, Catalog, migration_config

pytestmark = pytest.mark.integration


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migration_config())


def _recorded(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _downgrade_to_base(catalog: Catalog) -> None:
    from alembic import command

    config = migration_config()
    with catalog.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")


def test_the_history_is_one_line_with_one_head() -> None:
    script = _script()
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    for newer, older in itertools.pairwise(revisions):
        assert newer.down_revision == older.revision  # each revision has exactly one parent
    numbers = [r.revision.split("_")[0] for r in revisions]
    assert len(set(numbers)) == len(numbers), numbers


def test_the_fast_path_head_is_alembics_head(tmp_path: Path) -> None:
    """open_catalog skips Alembic for a catalog at HEAD_REVISION: that constant must be the
    history's head, or a new migration would never run on an existing catalog."""
    assert _script().get_current_head() == HEAD_REVISION
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert not catalog.at_head()
    catalog.upgrade()
    assert catalog.at_head()
    _downgrade_to_base(catalog)
    assert not catalog.at_head()
    catalog.engine.dispose()


def _round_trip(url: str) -> None:
    from governance.catalog.models import Base
    from imaging.compliance.models import ErasureRecord  # noqa: F401 (registers its tables)
    from imaging.datasets.models import DatasetVersionRecord  # noqa: F401

    head = _script().get_current_head()
    catalog = Catalog(url)
    catalog.upgrade()
    assert _recorded(url) == [head]
    assert set(Base.metadata.tables) <= _tables(url), set(Base.metadata.tables) - _tables(url)
    catalog.upgrade()  # nothing left to do
    assert _recorded(url) == [head]
    _downgrade_to_base(catalog)
    assert _tables(url) <= {"alembic_version"}
    assert _recorded(url) == []
    catalog.upgrade()
    assert _recorded(url) == [head]
    catalog.engine.dispose()


def test_upgrade_from_empty_and_downgrade_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'catalog.db'}")


def test_upgrade_from_empty_and_downgrade_on_postgres(postgres: Any) -> None:
    _round_trip(str(postgres.create_database("migrations_round_trip")))
    assert postgres.query("postgres", "SHOW server_version")[0][0].startswith("15")


def _record(url: str, revisions: list[str]) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
        for revision in revisions:
            connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": revision})
    engine.dispose()


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command

    catalog = Catalog(url)
    config = migration_config()
    with catalog.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    catalog.engine.dispose()


def test_a_catalog_of_the_former_branched_history_joins_the_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    _upgrade_to(url, "0007_audit_signatures")  # the newest revision of the branched history
    # What upgrade("heads") recorded before the history was made linear (0002 under 0007).
    _record(
        url, ["0003_datasets", "0003_gateway", "0005_compliance", "0006_monitoring", "0007_audit_signatures"]
    )
    Catalog(url).upgrade()  # carried onto the line, then the revisions after it applied
    assert _recorded(url) == [_script().get_current_head()]


def test_a_branched_catalog_with_a_gap_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    _upgrade_to(url, "0006_monitoring")
    _record(url, ["0002_governance", "0006_monitoring"])  # datasets, gateway, compliance never applied
    with pytest.raises(RuntimeError, match="never applied"):
        Catalog(url).upgrade()
