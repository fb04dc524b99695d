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

import contextlib
import dataclasses
import fcntl
import hashlib
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from governance.catalog import Catalog, Instance, LineageEvent, QuarantineRecord, open_catalog
from governance.keys import ProjectKey, load_project_key
from governance.settings import Settings, get_settings
from imaging.deid import Deidentifier, DeidProfile, QuarantineReason, load_profile
from imaging.ingest.recorder import CatalogRecorder, Result, quarantine_input, result_from
from imaging.ingest.runner import iter_files
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom
from imaging.store import ContentStore, atomic_write

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
]

MANIFEST_SUFFIXES = (".manifest", ".txt", ".lst")
MAX_INPUTS = 20_000_000  # entries one job lists (the driver holds the list: ~100 bytes each)
MAX_MANIFEST_LINE = 4096
DUPLICATE = "duplicate"
_T = TypeVar("_T")


class SourceError(ValueError):
    """The source cannot be listed (missing, empty, too many entries, a bad manifest line)."""


class IntakeUnavailable(RuntimeError):
    """The catalog or the store stayed unreachable through every retry (rerun to resume)."""


class KeyMismatch(RuntimeError):
    """A node's project key is not the driver's: its pseudonyms would differ."""


class IngestJobError(RuntimeError):
    """The job stopped before every input was recorded; ``report`` has what was committed."""

    def __init__(self, message: str, report: ClusterIngestReport) -> None:
        super().__init__(message)
        self.report = report


# ---- listing ---------------------------------------------------------------------------------


def _is_url(name: str) -> bool:
    return "://" in name and not name.startswith("file://")


def list_source(source: str, *, max_inputs: int = MAX_INPUTS) -> list[str]:
    """The inputs of ``source`` in a stable order: local paths, or URLs for an fsspec prefix."""
    names = (
        sorted(_iter_source(source, max_inputs))
        if _is_url(source)
        else list(_iter_source(source, max_inputs))
    )
    if not names:
        raise SourceError("the source holds no input files")
    return names


def _iter_source(source: str, max_inputs: int) -> Iterator[str]:
    for count, name in enumerate(_entries(source), start=1):
        if count > max_inputs:
            raise SourceError(f"the source lists more than {max_inputs} inputs: split the job")
        yield name


def _entries(source: str) -> Iterator[str]:
    if _is_url(source):
        import fsspec

        fs, base = fsspec.core.url_to_fs(source)
        for key in fs.find(base):
            yield str(fs.unstrip_protocol(key))
        return
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        yield from (str(p) for p in iter_files([path.resolve()]))
    elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        yield from _manifest_entries(path)
    elif path.is_file():
        yield str(path.resolve())
    else:
        raise SourceError("the source is neither a folder, a file, a manifest nor a storage URL")


def _manifest_entries(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_MANIFEST_LINE:
                raise SourceError(f"manifest line {number} is longer than {MAX_MANIFEST_LINE} bytes")
            line = raw.decode("utf-8", "replace").strip()
            if not line or line.startswith("#"):
                continue
            if not _is_url(line) and not Path(line.removeprefix("file://")).is_absolute():
                raise SourceError(f"manifest line {number}: entries are absolute paths or URLs")
            yield line if _is_url(line) else str(Path(line.removeprefix("file://")))


def job_id_for(source: str, profile: str, key_id: str) -> str:
    """The job's id: the same source, profile and key always give the same job (a rerun resumes)."""
    canonical = source if _is_url(source) else str(Path(source.removeprefix("file://")).resolve())
    return hashlib.sha256(f"radgate-ingest|{canonical}|{profile}|{key_id}".encode()).hexdigest()[:16]


# ---- the job as the tasks see it -------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """What every task needs (picklable; no secret: each node reads its own project key)."""

    job_id: str
    profile: DeidProfile
    key_id: str
    sealer: Any  # the driver's key's sealer: originals are sealed to its honest broker
    catalog_url: str
    store_root: str
    quarantine_root: str
    attempts: int = 6  # per catalog or store operation, with exponential backoff
    backoff_s: float = 0.5

    def source_of(self, path_digest: str) -> str:
        return f"ray:{self.job_id}:{path_digest}"


@dataclass
class ChunkReport:
    """What one task did: counts only (no names, paths or UIDs)."""

    node: str = ""
    files: int = 0
    deidentified: int = 0
    quarantined: int = 0
    duplicates: int = 0
    resumed: int = 0  # committed by an earlier attempt of this job: counted with that outcome
    bytes_in: int = 0
    busy_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: str, reason: str | None = None) -> None:
        self.files += 1
        if outcome == Outcome.DEIDENTIFIED.value:
            self.deidentified += 1
        elif outcome == Outcome.QUARANTINED.value:
            self.quarantined += 1
            self.reasons[reason or "unknown"] += 1
        else:
            self.duplicates += 1


def _lock_key(digest: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key from an input hash."""
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable catalog or store, worth retrying."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    errors: list[type[BaseException]] = [OperationalError, InterfaceError, OSError, TimeoutError]
    with contextlib.suppress(ImportError):
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    return tuple(errors)


def with_backoff(spec: JobSpec, what: str, operation: Callable[[], _T]) -> _T:
    """Run ``operation``, retrying transient failures with exponential backoff and jitter;
    :class:`IntakeUnavailable` (naming ``what`` and the error type, never a URL) after the last."""
    transient = _transient_errors()
    for attempt in range(1, spec.attempts + 1):
        try:
            return operation()
        except transient as exc:
            if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
                raise  # the input's own problem, not an outage
            if attempt == spec.attempts:
                raise IntakeUnavailable(
                    f"{what} unavailable after {attempt} attempts ({type(exc).__name__}); rerun to resume"
                ) from None
            delay = min(8.0, spec.backoff_s * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


class _Worker:
    """Per-process state of a job's tasks: de-identifier, store, catalog connection."""

    def __init__(self, spec: JobSpec) -> None:
        quiet_pydicom()
        self.spec = spec
        settings = Settings(catalog_url=spec.catalog_url, object_store=spec.store_root)
        own = load_project_key(settings, create=False)
        if own.key_id != spec.key_id:
            raise KeyMismatch(
                f"this node's project key (id {own.key_id}) is not the job's (id {spec.key_id}): "
                "give every node the same RADGATE_PROJECT_KEY"
            )
        self.key: ProjectKey = dataclasses.replace(own, sealer=spec.sealer)
        self.deid = Deidentifier(spec.profile, self.key)
        self.store = ContentStore(spec.store_root)
        self.local_store = "://" not in spec.store_root or spec.store_root.startswith("file://")
        self.catalog = Catalog(spec.catalog_url)  # migrated by the driver before any task
        self.recorder = CatalogRecorder(
            self.catalog, profile=spec.profile.label, key_id=spec.key_id, step="ingest", record_instances=True
        )
        url = spec.catalog_url
        self.writer_lock = (
            Path(url.removeprefix("sqlite:///") + ".writer-lock") if url.startswith("sqlite:///") else None
        )

    # -- reading -------------------------------------------------------------------------------

    def read(self, name: str) -> tuple[bytes | None, str, int, str | None]:
        """``(bytes or None, sha256, size, failure reason)``: an input over the limit is hashed
        in pieces, never held; one that cannot be read is keyed by its (keyed) name."""
        limit = self.spec.profile.max_bytes
        try:
            if _is_url(name):
                import fsspec

                fs, path = fsspec.core.url_to_fs(name)
                size = int(with_backoff(self.spec, "input storage", lambda: fs.size(path)))
                if size > limit:
                    with fs.open(path, "rb") as handle:
                        return None, _hash_stream(handle), size, QuarantineReason.TOO_LARGE.value
                data = bytes(with_backoff(self.spec, "input storage", lambda: fs.cat_file(path)))
            else:
                local = Path(name)
                size = local.stat().st_size
                if size > limit:
                    with local.open("rb") as handle:
                        return None, _hash_stream(handle), size, QuarantineReason.TOO_LARGE.value
                data = local.read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            digest = self.key.mac("lookup", f"unreadable:{name}".encode()).hex()
            return None, digest, 0, f"{QuarantineReason.UNREADABLE.value}:{type(exc).__name__}"
        except OSError as exc:
            if _is_url(name):
                raise  # with_backoff gave up on it: an outage, not this input's fault
            digest = self.key.mac("lookup", f"unreadable:{name}".encode()).hex()
            return None, digest, 0, f"{QuarantineReason.UNREADABLE.value}:{type(exc).__name__}"
        return data, hashlib.sha256(data).hexdigest(), len(data), None

    # -- catalog -------------------------------------------------------------------------------

    def prior(
        self, connection: Any, digests: list[str], sources: list[str]
    ) -> tuple[dict[tuple[str, str], tuple[str, str | None]], set[str]]:
        """``({(input hash, source): (outcome, reason)} of this job's records, {input hashes held})``."""
        from sqlalchemy import select

        if not digests:
            return {}, set()
        lineage = connection.execute(
            select(
                LineageEvent.input_sha256, LineageEvent.source, LineageEvent.outcome, LineageEvent.details
            ).where(
                LineageEvent.input_sha256.in_(digests),
                LineageEvent.source.in_(sources),
                LineageEvent.step == "ingest",
            )
        )
        done = {(row[0], row[1]): (str(row[2]), (row[3] or {}).get("reason")) for row in lineage}
        held = set(
            connection.execute(
                select(Instance.input_sha256).where(Instance.input_sha256.in_(digests))
            ).scalars()
        )
        held |= set(
            connection.execute(
                select(QuarantineRecord.input_sha256).where(QuarantineRecord.input_sha256.in_(digests))
            ).scalars()
        )
        return done, held

    def lookup(self, digest: str, source: str) -> tuple[tuple[str, str | None] | None, bool]:
        """This job's recorded (outcome, reason) for the input (None if none), and whether its
        hash is held."""

        def query() -> tuple[dict[tuple[str, str], tuple[str, str | None]], set[str]]:
            with self.catalog.engine.connect() as connection:
                return self.prior(connection, [digest], [source])

        done, held = with_backoff(self.spec, "catalog", query)
        return done.get((digest, source)), digest in held

    @contextlib.contextmanager
    def _sqlite_writer(self) -> Iterator[None]:
        if self.writer_lock is None:
            yield
            return
        fd = os.open(self.writer_lock, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def commit(self, pending: list[Result], report: ChunkReport) -> None:
        """Record the chunk once: lock its input hashes, re-check, write what is new."""
        from sqlalchemy import text

        def transaction() -> list[tuple[str, str | None]]:
            outcomes: list[tuple[str, str | None]] = []
            with self._sqlite_writer(), self.catalog.engine.begin() as connection:
                digests = sorted({r.input_sha256 for r in pending})
                if connection.dialect.name == "postgresql":
                    keys = sorted({_lock_key(d) for d in digests})
                    # one round trip; taken in key order, so two commits never wait on each other
                    statement = text(
                        "SELECT count(pg_advisory_xact_lock(k)) "
                        "FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS s"
                    )
                    connection.execute(statement, {"keys": keys})
                done, held = self.prior(connection, digests, [r.source for r in pending])
                new: list[Result] = []
                for result in pending:
                    recorded = done.get((result.input_sha256, result.source))
                    if recorded is not None:  # a twin of this task committed it meanwhile
                        outcomes.append(recorded)
                        continue
                    if result.input_sha256 in held and result.outcome != DUPLICATE:
                        result.outcome, result.sealed = DUPLICATE, []
                    held.add(result.input_sha256)
                    new.append(result)
                self.recorder.record_on(connection, new)
                outcomes.extend((r.outcome, r.reason) for r in new)
            return outcomes

        for outcome, reason in with_backoff(self.spec, "catalog", transaction):
            report.count(outcome, reason)

    # -- outputs -------------------------------------------------------------------------------

    def quarantine(self, digest: str, data: bytes | None, reason: str, detail: str, source: str) -> str:
        """Seal a quarantined input with its reason where the job's quarantine lives: sealed and
        noted as on one machine (``quarantine_input``), then copied beside a remote store."""
        root = self.spec.quarantine_root
        if not _is_url(root):
            return quarantine_input(Path(root), self.key, digest, data, reason, detail, source, durable=False)
        import fsspec

        fs, base = fsspec.core.url_to_fs(root)
        with tempfile.TemporaryDirectory(prefix="radgate-quarantine-") as folder:
            written = Path(quarantine_input(Path(folder), self.key, digest, data, reason, detail, source))
            for path in sorted(Path(folder).glob(f"{digest}.*")):
                content = path.read_bytes()
                target = f"{base}/{path.name}"
                with_backoff(self.spec, "store", lambda: fs.pipe_file(target, content))  # noqa: B023
        return f"{root}/{written.name}"

    def process(self, name: str, source: str, report: ChunkReport, seen: dict[str, str]) -> Result | None:
        """One input to a Result to commit (None when this job recorded it already)."""
        data, digest, size, failure = self.read(name)
        report.bytes_in += size
        recorded, held = self.lookup(digest, source)
        if recorded is not None:
            report.resumed += 1
            report.count(*recorded)
            return None
        if held or digest in seen:  # stored already, or an earlier input of this chunk
            return Result(digest, size, DUPLICATE, source, summary={"outcome": DUPLICATE})
        seen[digest] = source
        if failure is not None or data is None:
            reason, _, kind = (failure or "unreadable").partition(":")
            limit = self.spec.profile.max_bytes
            detail = (
                f"{size} bytes exceeds limit {limit}" if reason == "too_large" else f"cannot read ({kind})"
            )
            location = self.quarantine(digest, None, reason, detail, source)
            return Result(
                digest, size, Outcome.QUARANTINED.value, source, location=location, reason=reason,
                detail=detail, summary={"outcome": "quarantined", "reason": reason, "detail": detail},
            )  # fmt: skip
        processed = process_bytes(data, self.deid, self.key, self.spec.profile, digest=digest)
        if processed.outcome is Outcome.QUARANTINED:
            location = self.quarantine(digest, data, processed.reason or "", processed.detail, source)
            return result_from(processed, source, location)
        assert processed.output_parts is not None and processed.output_sha256 is not None
        output, key = processed.output_parts, processed.output_sha256
        if self.local_store:
            target = self.store.path(key)
            if not target.exists():
                atomic_write(target, output, durable=False, replace=False)
        else:
            joined = b"".join(output)
            with_backoff(self.spec, "store", lambda: self.store.put(joined, digest=key))
        return result_from(processed, source, key)

    def run(self, items: list[tuple[str, str]]) -> ChunkReport:
        started = time.perf_counter()
        report = ChunkReport(node=_node_id())
        pending: list[Result] = []
        seen: dict[str, str] = {}
        for name, path_digest in items:
            result = self.process(name, self.spec.source_of(path_digest), report, seen)
            if result is not None:
                pending.append(result)
        if pending:
            if self.local_store or not _is_url(self.spec.quarantine_root):
                os.sync()  # local objects and quarantine notes are written unflushed: one flush per chunk
            self.commit(pending, report)
        report.busy_s = time.perf_counter() - started
        return report


def _hash_stream(handle: Any) -> str:
    hasher = hashlib.sha256()
    for piece in iter(lambda: handle.read(1 << 20), b""):
        hasher.update(piece)
    return hasher.hexdigest()


def _node_id() -> str:
    """This Ray node's id (12 hex digits); ``local`` outside Ray (asking would start a Ray)."""
    import ray

    return str(ray.get_runtime_context().get_node_id())[:12] if ray.is_initialized() else "local"


_workers: dict[str, _Worker] = {}


def run_chunk(spec: JobSpec, items: list[tuple[str, str]]) -> ChunkReport:
    """The body of one task: ``items`` are ``(path or URL, keyed digest of it)``."""
    worker = _workers.get(spec.job_id)
    if worker is None or worker.spec != spec:
        if len(_workers) >= 4:
            _workers.clear()
        worker = _workers[spec.job_id] = _Worker(spec)
    return worker.run(items)


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
