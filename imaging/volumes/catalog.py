"""Series as the catalog knows them: de-identified series UIDs and their stored instances."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from governance.catalog import Instance, open_catalog
from governance.settings import Settings, get_settings
from imaging.store import ContentStore
from imaging.volumes.assemble import assemble_series
from imaging.volumes.volume import Volume

__all__ = ["catalog_series", "load_stored_series", "stored_series"]


def catalog_series(settings: Settings | None = None, *, modality: str | None = None) -> dict[str, int]:
    """De-identified SeriesInstanceUID -> number of stored instances (optionally one modality)."""
    query = select(Instance.series_instance_uid, func.count(Instance.id)).group_by(
        Instance.series_instance_uid
    )
    if modality:
        query = query.where(Instance.modality == modality)
    with open_catalog(settings or get_settings()).session() as session:
        return {str(uid): int(count) for uid, count in session.execute(query)}


def stored_series(series_uid: str, settings: Settings | None = None) -> list[Path]:
    """Local paths of the stored instances of one de-identified series (empty when unknown)."""
    settings = settings or get_settings()
    with open_catalog(settings).session() as session:
        keys = list(
            session.scalars(
                select(Instance.store_key)
                .where(Instance.series_instance_uid == series_uid)
                .order_by(Instance.id)
            )
        )
    store = ContentStore.from_settings(settings)
    return [store.path(key) for key in keys]


def load_stored_series(series_uid: str, settings: Settings | None = None) -> Volume:
    """The stored series assembled (raises :class:`SeriesGeometryError`, ``no_slices`` if unknown)."""
    return assemble_series(stored_series(series_uid, settings))
