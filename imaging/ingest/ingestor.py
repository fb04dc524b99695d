"""Single-instance ingestion for network intake (C-STORE, STOW-RS, pulls): durable before it returns."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select

from governance.catalog import Instance, open_catalog
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.deid import Deidentifier, DeidProfile, load_profile
from imaging.ingest.recorder import CatalogRecorder, Result, quarantine_processed, result_from
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom
from imaging.store import ContentStore

__all__ = ["IngestOutcome", "IngestStatus", "Ingestor"]


class IngestStatus(StrEnum):
    DEIDENTIFIED = "deidentified"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class IngestOutcome:
    status: IngestStatus
    input_sha256: str
    output_sha256: str | None = None
    store_key: str | None = None
    reason: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None  # de-identified
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None


class Ingestor:
    """De-identify, store and record one instance at a time; safe to share between threads."""

    def __init__(self, settings: Settings | None = None, profile: DeidProfile | str | None = None) -> None:
        quiet_pydicom()
        self.settings = settings or get_settings()
        self.profile = profile if isinstance(profile, DeidProfile) else load_profile(profile)
        self.key = load_project_key(self.settings)
        self.deid = Deidentifier(self.profile, self.key)
        self.store = ContentStore.from_settings(self.settings)
        self.catalog = open_catalog(self.settings)
        self.recorder = CatalogRecorder(
            self.catalog,
            profile=self.profile.label,
            key_id=self.key.key_id,
            step="ingest",
            record_instances=True,
        )
        self.settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
        # SQLite serialises writers anyway; one lock keeps the duplicate check and insert atomic.
        self._lock = threading.Lock()

    def _existing(self, input_sha256: str) -> Instance | None:
        with self.catalog.session() as session:
            return (
                session.execute(select(Instance).where(Instance.input_sha256 == input_sha256))
                .scalars()
                .first()
            )

    def ingest_path(self, path: Path | str, source: str = "folder") -> IngestOutcome:
        return self.ingest_bytes(Path(path).read_bytes(), source)

    def ingest_bytes(self, data: bytes, source: str) -> IngestOutcome:
        """Returns only once the outcome is committed to the catalog. Never raises on bad input."""
        digest = hashlib.sha256(data).hexdigest()
        known = self._existing(digest)
        if known is not None:
            return IngestOutcome(
                IngestStatus.DUPLICATE,
                digest,
                known.sha256,
                known.store_key,
                None,
                known.sop_class_uid,
                known.sop_instance_uid,
                known.series_instance_uid,
                known.study_instance_uid,
            )
        processed = process_bytes(data, self.deid, self.key, self.profile, digest=digest)
        if processed.outcome is Outcome.QUARANTINED:
            location = quarantine_processed(self.settings.quarantine_dir, self.key, processed, data, source)
        else:
            assert processed.output is not None
            location = self.store.put(processed.output)
        result: Result = result_from(processed, source, location)
        with self._lock:
            self.recorder.record([result])
        record = processed.record
        return IngestOutcome(
            status=IngestStatus(result.outcome),
            input_sha256=digest,
            output_sha256=processed.output_sha256,
            store_key=location if processed.outcome is Outcome.DEIDENTIFIED else None,
            reason=result.reason,
            sop_class_uid=record.sop_class_uid if record else None,
            sop_instance_uid=record.sop_instance_uid if record else None,
            series_instance_uid=record.series_instance_uid if record else None,
            study_instance_uid=record.study_instance_uid if record else None,
        )
