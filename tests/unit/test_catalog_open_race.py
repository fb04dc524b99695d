"""Threads that open the same new catalog at once share one migrated catalog."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import inspect


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    from governance.catalog import db

    url = f"sqlite:///{tmp_path / 'race.db'}"
    upgrades: list[int] = []
    real_upgrade = db.Catalog.upgrade

    def counted(self: db.Catalog) -> None:
        upgrades.append(1)
        real_upgrade(self)

    start = threading.Barrier(8)
    opened: list[db.Catalog] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            opened.append(db._cached(url))
        except BaseException as exc:  # collected: the test reports it
            errors.append(exc)

    db.Catalog.upgrade = counted  # type: ignore[method-assign]
    try:
        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        db.Catalog.upgrade = real_upgrade  # type: ignore[method-assign]
    assert not errors
    assert len(upgrades) == 1 and len({id(c) for c in opened}) == 1
    assert "alembic_version" in inspect(opened[0].engine).get_table_names()
