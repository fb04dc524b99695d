"""Bulk intake over a Ray cluster: the single-node pipeline (read, de-identify, store, record) as
Ray tasks over chunks of the input list, with the same guarantees.

- **Inputs**: a folder, a file, an fsspec prefix (``s3://bucket/prefix``) or a manifest (a text
  file ``*.manifest``/``*.txt``/``*.lst``: one path or URL per line, ``#`` comments).
- **Exactly once per input**: every input of a job has a lineage event whose ``source`` is
  ``ray:<job>:<keyed digest of its path>``. A task commits its chunk in one transaction that
  first locks the chunk's input hashes (PostgreSQL advisory locks; on SQLite the catalog's
  writer lock file, as the gateway) and then re-checks what is already recorded, so a retried
  or duplicated task, or a twin on another node, never records an input twice; an input whose
  hash the catalog already holds is a duplicate (nothing stored again).
- **Resumable**: the job id is derived from the source, the profile and the key, so rerunning
  the same command after a crash skips every input its earlier attempts committed and reports
  it with the outcome recorded then ("resumed").
- **Counts add up**: inputs = de-identified + quarantined + duplicates, checked at the end
  against the catalog (each input's lineage event), not only against what tasks returned.
- **Same pseudonyms everywhere**: every node de-identifies with the project key of its own
  environment (``RADGATE_PROJECT_KEY`` or the key file); a node whose key id differs from the
  driver's refuses to work. Originals are sealed to the driver's honest-broker public key.
- **Failures**: a node that dies loses only its chunks in flight, which Ray runs again
  elsewhere; a catalog or store outage is retried with exponential backoff, then the task
  fails with :class:`IntakeUnavailable`, the job stops with :class:`IngestJobError`, and a
  rerun completes it. Objects are written before the record (content-addressed, so a write
  repeated after a failure lands on the same name).
- **Bounded memory**: a task holds one input at a time (inputs over the profile's
  ``max_bytes`` are hashed in 1 MiB pieces and quarantined unread); the driver keeps at most
  two chunks per cluster CPU in flight.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from governance.catalog import Catalog, LineageEvent, open_catalog
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.deid import Deidentifier, DeidProfile, load_profile
from imaging.ingest.sources import SourceError, job_id_for, list_source
from imaging.ingest.sources import is_url as _is_url
from imaging.ingest.tasks import ChunkReport, IntakeUnavailable, JobSpec, KeyMismatch, run_chunk, with_backoff

__all__ = [
    "ChunkReport",
    "ClusterIngestReport",
    "IngestJobError",
    "IntakeUnavailable",
    "JobSpec",
    "KeyMismatch",
    "SourceError",
    "ingest_on_cluster",
    "job_id_for",
    "list_source",
    "run_chunk",
    "with_backoff",
]


class IngestJobError(RuntimeError):
    """The job stopped before every input was recorded; ``report`` has what was committed."""

    def __init__(self, message: str, report: ClusterIngestReport) -> None:
        super().__init__(message)
        self.report = report


# ---- the driver ------------------------------------------------------------------------------


@dataclass
class ClusterIngestReport:
    inputs: int = 0
    deidentified: int = 0
    quarantined: int = 0
    duplicates: int = 0
    resumed: int = 0
    chunks: int = 0
    bytes_in: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    files_per_node: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    job_id: str = ""
    profile: str = ""
    key_id: str = ""

    @property
    def done(self) -> int:
        return self.deidentified + self.quarantined + self.duplicates

    def add(self, chunk: ChunkReport) -> None:
        self.chunks += 1
        self.deidentified += chunk.deidentified
        self.quarantined += chunk.quarantined
        self.duplicates += chunk.duplicates
        self.resumed += chunk.resumed
        self.bytes_in += chunk.bytes_in
        self.reasons.update(chunk.reasons)
        self.files_per_node[chunk.node] += chunk.files

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "deidentified": self.deidentified,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "resumed": self.resumed,
            "quarantine_reasons": dict(self.reasons),
            "nodes": len(self.files_per_node),
            "files_per_node": dict(self.files_per_node),
            "chunks": self.chunks,
            "bytes_in": self.bytes_in,
            "job_id": self.job_id,
            "profile": self.profile,
            "key_id": self.key_id,
            "elapsed_s": round(self.elapsed_s, 3),
            "files_per_s": round(self.inputs / self.elapsed_s, 1) if self.elapsed_s else None,
        }


def _quarantine_root(settings: Settings) -> str:
    """Beside a remote store (every node reaches it); the local quarantine folder otherwise."""
    root = settings.resolved_object_store
    return root.rstrip("/") + "-quarantine" if _is_url(root) else str(settings.quarantine_dir)


def _task_error(error: BaseException) -> str:
    """A task's failure in words of our own (a RayTaskError wraps the exception it raised)."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, IntakeUnavailable | KeyMismatch):
        return str(cause)
    return type(cause).__name__


def ingest_on_cluster(
    source: str,
    *,
    ray_address: str | None = None,
    profile: DeidProfile | str | None = None,
    settings: Settings | None = None,
    chunk_size: int = 32,
    max_in_flight: int | None = None,
    on_progress: Callable[[ClusterIngestReport], None] | None = None,
) -> ClusterIngestReport:
    """De-identify every input of ``source`` on the Ray cluster at ``ray_address`` (an existing
    connection, or a local Ray when None); raises :class:`IngestJobError` if the job stops
    before every input is recorded (a rerun resumes it)."""
    import ray

    settings = settings or get_settings()
    profile = profile if isinstance(profile, DeidProfile) else load_profile(profile)
    key = load_project_key(settings)
    open_catalog(settings)  # migrated once here, before any task opens it
    names = list_source(source)
    spec = JobSpec(
        job_id=job_id_for(source, profile.label, key.key_id),
        profile=profile,
        key_id=key.key_id,
        sealer=key.sealer,
        catalog_url=settings.resolved_catalog_url,
        store_root=settings.resolved_object_store,
        quarantine_root=_quarantine_root(settings),
    )
    if not _is_url(spec.quarantine_root):
        Path(spec.quarantine_root).mkdir(parents=True, exist_ok=True)
        os.chmod(spec.quarantine_root, 0o700)
    deid = Deidentifier(profile, key)
    # File names can hold patient names: tasks and lineage see a keyed digest of each name.
    items = [(name, deid.pseudonyms.lookup("path", name)[:16]) for name in names]
    report = ClusterIngestReport(
        inputs=len(items), job_id=spec.job_id, profile=profile.label, key_id=key.key_id
    )
    started = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=ray_address, log_to_driver=False, include_dashboard=False)
    try:
        failure = _drive(ray, spec, items, report, chunk_size, max_in_flight, on_progress)
    finally:
        if owned:
            ray.shutdown()
    report.elapsed_s = time.perf_counter() - started
    missing = _unrecorded(spec, items)
    _audit(report, failure, missing)
    if failure is not None:
        raise IngestJobError(
            f"the job stopped: {failure}; {report.done} of {report.inputs} inputs recorded; rerun to resume",
            report,
        )
    if missing or report.done != report.inputs:
        raise IngestJobError(
            f"{max(missing, report.inputs - report.done)} of {report.inputs} inputs have no record; "
            "rerun to resume",
            report,
        )
    return report


def _drive(
    ray: Any,
    spec: JobSpec,
    items: list[tuple[str, str]],
    report: ClusterIngestReport,
    chunk_size: int,
    max_in_flight: int | None,
    on_progress: Callable[[ClusterIngestReport], None] | None,
) -> str | None:
    """Submit the chunks (a bounded number in flight) and gather their reports; the first
    failure stops new submissions (those in flight still finish) and is returned."""
    task = ray.remote(
        num_cpus=1, max_retries=4, retry_exceptions=[IntakeUnavailable], scheduling_strategy="SPREAD"
    )(run_chunk)
    spec_ref = ray.put(spec)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    limit = max_in_flight or max(2, 2 * cpus)
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), max(1, chunk_size))]
    chunks.reverse()
    in_flight: list[Any] = []
    failure: str | None = None
    while in_flight or (chunks and failure is None):
        while chunks and failure is None and len(in_flight) < limit:
            in_flight.append(task.remote(spec_ref, chunks.pop()))
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        try:
            report.add(ray.get(ready[0]))
        except Exception as exc:  # a task that failed after its retries
            failure = failure or _task_error(exc)
        if on_progress is not None:
            on_progress(report)
    return failure


def _unrecorded(spec: JobSpec, items: list[tuple[str, str]]) -> int:
    """Inputs of the job without their lineage event in the catalog (0 when the job is complete)."""
    from sqlalchemy import select

    prefix = spec.source_of("")
    expected = {spec.source_of(d) for _, d in items}
    catalog = Catalog(spec.catalog_url)
    try:
        with catalog.engine.connect() as connection:
            rows = connection.execute(
                select(LineageEvent.source).where(
                    LineageEvent.source.startswith(prefix), LineageEvent.step == "ingest"
                )
            ).scalars()
            found = set(rows)
    finally:
        catalog.engine.dispose()
    return len(expected - found)


def _audit(report: ClusterIngestReport, failure: str | None, missing: int) -> None:
    """One audit entry per run: counts, profile, key id and job id (never names, paths or UIDs)."""
    from governance.audit import record
    from governance.auth import current_actor

    actor, role = current_actor()
    details = {k: v for k, v in report.as_dict().items() if k not in ("files_per_node",)}
    details.update(ray=True, unrecorded=missing, failure=failure)
    record(actor, "ingest.run", f"profile:{report.profile}", details, role=role)
