"""The task side of distributed intake: what one Ray task does with its chunk of inputs (see
:mod:`imaging.ingest.distributed` for the guarantees), and the retries with backoff around the
catalog and the store."""

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

from governance.catalog import Catalog, Instance, LineageEvent, QuarantineRecord
from governance.keys import ProjectKey, load_project_key
from governance.settings import Settings
from imaging.deid import Deidentifier, DeidProfile, QuarantineReason
from imaging.ingest.recorder import CatalogRecorder, Result, quarantine_input, result_from
from imaging.ingest.sources import is_url as _is_url
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom
from imaging.store import ContentStore, atomic_write

__all__ = [
    "DUPLICATE",
    "ChunkReport",
    "IntakeUnavailable",
    "JobSpec",
    "KeyMismatch",
    "run_chunk",
    "with_backoff",
]

DUPLICATE = "duplicate"
_T = TypeVar("_T")


class IntakeUnavailable(RuntimeError):
    """The catalog or the store stayed unreachable through every retry (rerun to resume)."""


class KeyMismatch(RuntimeError):
    """A node's project key is not the driver's: its pseudonyms would differ."""


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
