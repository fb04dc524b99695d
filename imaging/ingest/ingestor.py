"""Single-instance ingestion for network intake (C-STORE, STOW-RS, pulls): durable before it returns.

Each instance is de-identified in its caller's thread; a small thread pool then writes the
object (temporary file in the store's root, ``O_DIRECT`` where possible, started as soon as the
output is encoded, while the caller hashes it; published under its name by a hard link once
that digest is known) and flushes it and its folders, while the caller inserts its catalog
record through a group commit (instances arriving together share one transaction; on SQLite
committed with ``synchronous=FULL``, so it survives a power loss, not only a crash of the
process; on DB-API connections that the durable engine set up, not through SQLAlchemy). The
commit waits until the object is at its name, then runs at the same time as the object's flushes;
``ingest_bytes`` returns only when both are done. A crash (SIGKILL) can leave an object without
its record, never the reverse, since the object is at its name before the commit; after a
power loss a record may outlive an object that was never durable (its sender heard no success):
start-up recovery (``imaging.gateway.recovery``) removes both kinds.

Twins (the same content arriving at once, e.g. on two associations) share one stored object. A
failed twin drops the object only while holding the store's object lock exclusively and only
if no committed record names it; a commit holds that lock shared and checks that each new
record's object is still there (if a failed twin removed it first, the object is written
again). So cleanup never removes an object that a committed record points to.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select

from governance.catalog import Catalog, Instance, open_catalog
from governance.keys import load_project_key
from governance.settings import Settings, get_settings
from imaging.deid import Deidentifier, DeidProfile, load_profile
from imaging.dicomio import Parts
from imaging.ingest.commit import (
    GroupCommit,
    fsync_directory,
    fsync_file,
    publish_temp,
    write_new_object,
    write_temp,
)
from imaging.ingest.recorder import (
    CatalogRecorder,
    Result,
    SqliteConnections,
    quarantine_processed,
    result_from,
)
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom
from imaging.store import ContentStore

__all__ = ["IngestOutcome", "IngestStatus", "Ingestor", "ObjectVanishedError"]


class ObjectVanishedError(RuntimeError):
    """A record's object was removed (by a failed twin's cleanup) before the record committed."""


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


def _full_sync(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=FULL")  # WAL fsynced at each commit
    cursor.close()


def _durable_catalog(settings: Settings) -> Catalog:
    """The migrated catalog, through an engine of its own whose commits are durable on disk."""
    shared = open_catalog(settings)  # migrates once per process
    if not shared.url.startswith("sqlite:///"):
        return shared  # server databases commit durably by default
    return _durable_engine(shared.url, os.getpid())  # one per process: never shared over a fork


@lru_cache(maxsize=8)
def _durable_engine(url: str, _pid: int) -> Catalog:
    catalog = Catalog(url)
    engine: Engine = catalog.engine
    event.listen(engine, "connect", _full_sync)
    return catalog


@lru_cache(maxsize=8)
def _sqlite_connections(url: str, pid: int) -> SqliteConnections:
    """The DB-API connections of the durable engine (one set per process, as the engine)."""
    return SqliteConnections(_durable_engine(url, pid).engine)


@lru_cache(maxsize=4)
def _fsync_pool(_pid: int) -> ThreadPoolExecutor:
    """Threads that write and flush objects while their records commit (one pool per process).
    A task never waits for another task, so a full pool only queues."""
    return ThreadPoolExecutor(8, thread_name_prefix="fsync")


class _NotStored(Exception):
    """An output whose writing had started is not stored after all (its processing failed)."""


@dataclass(frozen=True)
class _Writing:
    """An object being stored: ``placed`` once it is at its name, ``durable`` once flushed."""

    placed: Future[None]
    durable: Future[None]


@dataclass(frozen=True)
class _Pending:
    """A record for the group commit, with the write its commit must wait for (if any)."""

    result: Result
    placed: Future[None] | None


def _settle(future: Future[None] | None) -> BaseException | None:
    """Wait for ``future``; its exception, if it failed."""
    return None if future is None else future.exception()  # waits for it


class Ingestor:
    """De-identify, store and record one instance at a time; safe to share between threads."""

    def __init__(self, settings: Settings | None = None, profile: DeidProfile | str | None = None) -> None:
        quiet_pydicom()
        self.settings = settings or get_settings()
        self.profile = profile if isinstance(profile, DeidProfile) else load_profile(profile)
        self.key = load_project_key(self.settings)
        self.deid = Deidentifier(self.profile, self.key)
        self.store = ContentStore.from_settings(self.settings)
        self.catalog = _durable_catalog(self.settings)
        # SQLite: commits and lookups on DB-API connections set up by the durable engine
        sqlite = self.catalog.url.startswith("sqlite:///")
        self._connections = _sqlite_connections(self.catalog.url, os.getpid()) if sqlite else None
        self.recorder = CatalogRecorder(
            self.catalog,
            profile=self.profile.label,
            key_id=self.key.key_id,
            step="ingest",
            record_instances=True,
            connections=self._connections,
        )
        self.settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self._local_root = self._local_store_root()
        self._writer_lock = self._catalog_writer_lock()
        self._object_lock = self._local_root / ".objects-lock" if self._local_root else None
        if self._local_root is not None:
            self._local_root.mkdir(parents=True, exist_ok=True)  # its lock may be taken first
        self.commits: GroupCommit[_Pending] = GroupCommit(self._commit_batch)

    def _catalog_writer_lock(self) -> Path | None:
        """SQLite: the lock file that serialises this home's group commits across processes."""
        url = self.catalog.url
        return Path(url.removeprefix("sqlite:///") + ".writer-lock") if url.startswith("sqlite:///") else None

    def _commit_batch(self, batch: list[_Pending]) -> None:
        """One transaction for the batch. On SQLite, the leaders of several processes (gateway
        workers) queue on a file lock first: a waiter is woken as soon as the lock is free,
        where SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries. The rows are
        inserted while the objects are still being written; the commit waits until each
        object is at its name."""
        with self._locked(self._writer_lock, fcntl.LOCK_EX), self._locked(self._object_lock, fcntl.LOCK_SH):
            self.recorder.record([p.result for p in batch], before_commit=lambda: self._check_placed(batch))

    def _check_placed(self, batch: list[_Pending]) -> None:
        """Raise unless every stored object of the batch is at its name (a failed write, or a
        failed twin's cleanup removed it)."""
        for pending in batch:
            if pending.placed is not None:
                pending.placed.result()  # the write's own error, if it failed
            result = pending.result
            stored = result.outcome == Outcome.DEIDENTIFIED.value and result.location
            if stored and self._local_root is not None and not self.store.exists(str(result.location)):
                raise ObjectVanishedError("the stored object was removed before its record")

    @staticmethod
    @contextlib.contextmanager
    def _locked(path: Path | None, mode: int) -> Iterator[None]:
        """flock ``path`` (created if absent) for the block; no lock when ``path`` is None. A
        fresh open file per use: flock locks belong to open files, so threads exclude each
        other too."""
        if path is None:
            yield
            return
        lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(lock, mode)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            os.close(lock)

    def _local_store_root(self) -> Path | None:
        root = self.store.root
        return Path(root.removeprefix("file://")) if "://" not in root or root.startswith("file://") else None

    _KNOWN_COLUMNS = (
        Instance.sha256,
        Instance.store_key,
        Instance.sop_class_uid,
        Instance.sop_instance_uid,
        Instance.series_instance_uid,
        Instance.study_instance_uid,
    )

    _KNOWN_SQLITE = (
        f"SELECT {', '.join(c.name for c in _KNOWN_COLUMNS)} FROM {Instance.__tablename__} "
        "WHERE input_sha256 = ? LIMIT 1"
    )

    def _existing(self, input_sha256: str) -> tuple[str, ...] | None:
        """The stored instance made from this input, if its object is really in the store (a
        record whose object is missing is treated as absent, so a resend restores the object).
        On SQLite the query runs on a DB-API connection of its own (Core, and a checkout from
        the engine's pool, cost several times the lookup)."""
        row: Any
        if self._connections is not None:
            with self._connections.connection() as dbapi:
                rows = dbapi.execute(self._KNOWN_SQLITE, (input_sha256,)).fetchall()  # statement done
            row = rows[0] if rows else None
        else:
            query = select(*self._KNOWN_COLUMNS).where(Instance.input_sha256 == input_sha256).limit(1)
            with self.catalog.engine.connect() as connection:
                row = connection.execute(query).first()
        if row is None or not self.store.exists(row[1]):
            return None
        return tuple(row)

    def _place(self, key: str, output: Parts, placed: Future[None]) -> None:
        """In the pool: write the object (unless already there), say so, then flush it."""
        try:
            path = self.store.path(key)
            new_folder = not path.parent.is_dir()
            if new_folder:
                path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                write_new_object(path, output)
        except BaseException as exc:
            placed.set_exception(exc)
            raise
        placed.set_result(None)
        self._flush(key, new_folder)

    def _place_named(self, output: Parts, named: Future[str], placed: Future[None]) -> None:
        """In the pool: write the object to a temporary file in the store's root while the
        caller hashes it, then (once ``named`` gives its key) publish it under its name, say
        so, and flush it. A failed ``named`` only removes the temporary file."""
        assert self._local_root is not None
        try:
            temp = write_temp(self._local_root, output)
            try:
                key = named.result()
                path = self.store.path(key)
                new_folder = not path.parent.is_dir()
                if new_folder:
                    path.parent.mkdir(parents=True, exist_ok=True)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            publish_temp(temp, path)  # a twin's file already there is kept
        except BaseException as exc:
            placed.set_exception(exc)
            raise
        placed.set_result(None)
        self._flush(key, new_folder)

    @staticmethod
    def _abandon(early: list[tuple[Future[str], _Writing]]) -> None:
        """Stop writes started for an output that is not stored after all; returns once their
        temporary files are gone."""
        for named, writing in early:
            named.set_exception(_NotStored())
            _settle(writing.durable)

    def _flush(self, key: str, new_folder: bool) -> None:
        """fsync the object written without it, then its folder, and the folders above when its
        folder is new (after the file's flush, the folders' usually have nothing left to do)."""
        path = self.store.path(key)
        fsync_file(path)
        fsync_directory(path.parent)
        if new_folder:
            fsync_directory(path.parent.parent)
            fsync_directory(path.parent.parent.parent)

    def _record(self, result: Result, writing: _Writing | None) -> None:
        """Commit the record while the object is written and flushed; raise if either failed.
        The caller hears a failure then, so its object is dropped unless a record names it:
        the store keeps only recorded objects, and a resend writes it again."""
        placed, durable = (writing.placed, writing.durable) if writing else (None, None)
        try:
            self.commits.submit(_Pending(result, placed))  # returns once its batch is committed
        except ObjectVanishedError:
            _settle(durable)
            raise
        except Exception:
            _settle(durable)
            self._drop_unless_recorded(result)
            raise
        error = _settle(durable)
        if error is not None:
            # Not durable: the sender hears a failure. The object goes unless a committed
            # record names it (then a twin may have made it durable; recovery checks it).
            self._drop_unless_recorded(result)
            raise error

    def _drop_unless_recorded(self, result: Result) -> None:
        """Remove a failed instance's object unless a committed record points to it; the
        exclusive object lock keeps a twin's commit from landing between check and unlink."""
        if self._local_root is None or result.outcome == Outcome.QUARANTINED.value or not result.location:
            return
        with self._locked(self._object_lock, fcntl.LOCK_EX):
            query = select(Instance.id).where(Instance.sha256 == result.output_sha256).limit(1)
            with self.catalog.engine.connect() as connection:
                if connection.execute(query).first() is not None:
                    return
            with contextlib.suppress(OSError):
                self.store.path(result.location).unlink()

    def _put(self, output: Parts, digest: str) -> tuple[str, _Writing | None]:
        """Store the object: on a local store, start writing and flushing it in the pool (the
        caller records it meanwhile); an object store (fsspec) has it once ``put`` returns."""
        if self._local_root is None:
            return self.store.put(b"".join(output), durable=False, digest=digest), None
        placed: Future[None] = Future()
        durable = _fsync_pool(os.getpid()).submit(self._place, digest, output, placed)
        return digest, _Writing(placed, durable)

    def warm_up(self) -> bool:
        """Load what the first instance would (the pixel screener's OCR models and buffers):
        for a long-running service. False when no OCR engine can be loaded (instances with
        pixels are then quarantined, never passed unscreened)."""
        screener = self.deid.screener
        return True if screener is None else screener.warm_up()

    def ingest_path(self, path: Path | str, source: str = "folder") -> IngestOutcome:
        return self.ingest_bytes(Path(path).read_bytes(), source)

    def ingest_bytes(self, data: bytes, source: str, *, input_sha256: str | None = None) -> IngestOutcome:
        """Returns only once the outcome is committed to the catalog. Never raises on bad input.

        ``input_sha256``: the sha256 (hex) of ``data`` when the caller computed it already (the
        SCP hashes each data set as its PDUs arrive); it is trusted, not checked."""
        digest = input_sha256 or hashlib.sha256(data).hexdigest()
        known = self._existing(digest)
        if known is not None:
            sha, store_key, sop_class, sop_instance, series, study = known
            return IngestOutcome(
                IngestStatus.DUPLICATE, digest, sha, store_key, None, sop_class, sop_instance, series, study
            )
        early: list[tuple[Future[str], _Writing]] = []

        def write_early(parts: Parts) -> None:
            """Start writing the encoded output while ``process_bytes`` hashes it."""
            named: Future[str] = Future()
            placed: Future[None] = Future()
            durable = _fsync_pool(os.getpid()).submit(self._place_named, parts, named, placed)
            early.append((named, _Writing(placed, durable)))

        on_encoded = write_early if self._local_root is not None else None
        try:
            processed = process_bytes(
                data, self.deid, self.key, self.profile, digest=digest, on_encoded=on_encoded
            )
        except BaseException:
            self._abandon(early)
            raise
        writing: _Writing | None = None
        if processed.outcome is Outcome.QUARANTINED:
            self._abandon(early)  # not reached: an encoded output is de-identified
            location = quarantine_processed(self.settings.quarantine_dir, self.key, processed, data, source)
            fsync_directory(self.settings.quarantine_dir)
        elif early:
            assert processed.output_sha256 is not None
            named, writing = early[0]
            named.set_result(processed.output_sha256)
            location = processed.output_sha256
        else:
            assert processed.output_parts is not None and processed.output_sha256 is not None
            location, writing = self._put(processed.output_parts, processed.output_sha256)
        result: Result = result_from(processed, source, location)
        for attempt in range(3):
            try:
                self._record(result, writing)
                break
            except ObjectVanishedError:  # a failed twin removed the object: write it again
                if attempt == 2:
                    raise
                assert processed.output_parts is not None and processed.output_sha256 is not None
                _, writing = self._put(processed.output_parts, processed.output_sha256)
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
