"""The catalog on a real PostgreSQL 15 (Debian's server, a private cluster on 127.0.0.1 started by
the fixture): Alembic migrations to every head, then the same CLI as on SQLite (ingest, dataset
create/show) with only ``RADGATE_CATALOG_URL`` changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog_url(postgres: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database for this test, selected the way an operator would: RADGATE_CATALOG_URL."""
    from governance.settings import get_settings

    url = str(postgres.create_database(request.node.name.removeprefix("test_")[:40]))
    monkeypatch.setenv("RADGATE_CATALOG_URL", url)
    get_settings.cache_clear()
    return url


def _radgate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    radgate = Path(sys.executable).with_name("radgate")
    result = subprocess.run(
        [str(radgate), *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )
    assert result.returncode == 0, f"radgate {args[0]}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    return result


def test_migrations_reach_every_head_on_postgres(catalog_url: str, postgres: Any) -> None:
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    from governance.catalog import open_catalog
    from governance.catalog.db import _MIGRATIONS, Catalog
    from governance.catalog.models import Base
    from imaging.datasets.models import DatasetVersionRecord  # noqa: F401 (registers its table)

    catalog = open_catalog()
    assert catalog.engine.dialect.name == "postgresql"
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with catalog.engine.connect() as connection:
        applied = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
    assert applied == heads
    tables = set(inspect(catalog.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables, set(Base.metadata.tables) - tables
    # A second process opening the same catalog finds nothing to do.
    Catalog(catalog_url).upgrade()
    with catalog.engine.connect() as connection:
        assert {r[0] for r in connection.execute(text("SELECT version_num FROM alembic_version"))} == heads
    # The server really is PostgreSQL 15.
    assert postgres.query("postgres", "SHOW server_version")[0][0].startswith("15")


def test_ingest_and_dataset_round_trip_on_postgres(
    catalog_url: str, postgres: Any, tmp_path: Path, radgate_home: Path, as_role: Callable[[str], str]
) -> None:
    as_role("data-steward")  # ingest, catalog and dataset create need a token (inherited)
    from sqlalchemy import func, select

    from governance.catalog import open_catalog
    from imaging.datasets import create_dataset, get_dataset, materialize
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(tmp_path / "in", patients=6, images_per_patient=2, seed=3, size=32)
    _radgate("ingest", str(tmp_path / "in"), "--workers", "1")
    summary = {row["what"]: row["count"] for row in json.loads(_radgate("catalog", "--json").stdout)}
    assert summary["instances"] == len(demo.files) == 12
    assert summary["patients"] == 6
    # Ingest is idempotent on PostgreSQL too (same content, same keys, no duplicate rows).
    from imaging.ingest import Ingestor

    Ingestor().ingest_path(demo.files[0])
    assert postgres.query(catalog_url.rsplit("/", 1)[1], "SELECT count(*) FROM instances")[0][0] == 12

    created = _radgate(
        "dataset", "create", "pgtiny", "--labels", str(demo.labels_csv), "--label-names", "no_finding,opacity"
    )
    assert "created pgtiny" in created.stdout
    version = get_dataset("pgtiny")
    assert len(version.manifest.items) == 12
    # Same labels, same catalog content: the same version is found, not a new one.
    again = create_dataset("pgtiny", demo.labels_csv, label_names=["no_finding", "opacity"])
    assert again.version.id == version.id and not again.created
    rows = materialize(version, "train")
    assert rows and all(Path(r["image"]).is_file() for r in rows)

    # The rows really are in PostgreSQL, not in a SQLite file under RADGATE_HOME.
    assert not (radgate_home / "catalog.db").exists()
    from imaging.datasets.models import DatasetVersionRecord

    with open_catalog().session() as session:
        assert session.execute(select(func.count()).select_from(DatasetVersionRecord)).scalar_one() == 1
    assert postgres.query(catalog_url.rsplit("/", 1)[1], "SELECT count(*) FROM instances")[0][0] == 12
