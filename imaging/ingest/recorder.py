"""Results of de-identification, as picklable rows, and their durable record in the catalog."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from governance.catalog import Catalog, Instance, LineageEvent, Pseudonym, QuarantineRecord, utcnow
from governance.keyring import RECORD_QUARANTINE
from governance.keys import ProjectKey
from imaging.deid.engine import SOFTWARE
from imaging.pipeline import Outcome, Processed, SealedOriginal
from imaging.store import atomic_write

__all__ = [
    "CatalogRecorder",
    "Result",
    "SqliteConnections",
    "quarantine_input",
    "quarantine_processed",
    "result_from",
]


@dataclass
class Result:
    """What one input became; crosses process boundaries, so it holds no pixel bytes."""

    input_sha256: str
    input_size: int
    outcome: str  # deidentified | quarantined | duplicate
    source: str
    output_sha256: str | None = None
    location: str | None = None  # output path, store key or quarantine path
    reason: str | None = None
    detail: str = ""
    instance: dict[str, Any] | None = None
    sealed: list[SealedOriginal] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def result_from(processed: Processed, source: str, location: str | None) -> Result:
    instance = None
    if processed.record is not None:
        r = processed.record
        instance = {
            "sop_instance_uid": r.sop_instance_uid,
            "series_instance_uid": r.series_instance_uid,
            "study_instance_uid": r.study_instance_uid,
            "patient_pseudonym": r.patient_pseudonym,
            "sop_class_uid": r.sop_class_uid,
            "modality": r.modality,
            "attributes": r.attributes,
        }
    return Result(
        input_sha256=processed.input_sha256,
        input_size=processed.input_size,
        outcome=processed.outcome.value,
        source=source,
        output_sha256=processed.output_sha256,
        location=location,
        reason=processed.reason.value if processed.reason else None,
        detail=processed.detail,
        instance=instance,
        sealed=processed.sealed,
        summary=processed.summary,
    )


def quarantine_input(
    directory: Path,
    key: ProjectKey,
    digest: str,
    data: bytes | None,
    reason: str,
    detail: str,
    source: str,
    *,
    durable: bool = True,
) -> str:
    """Keep a quarantined input sealed to the honest broker (it still holds PHI), with its reason."""
    sealed_path = directory / f"{digest}.sealed"
    if data is not None and not sealed_path.exists():
        atomic_write(
            sealed_path, key.seal(data, associated=digest.encode(), record=RECORD_QUARANTINE), durable=durable
        )
    note = {
        "input_sha256": digest,
        "reason": reason,
        "detail": detail,
        "source": source,
        "sealed": data is not None,
    }
    encoded = json.dumps(note, indent=1).encode()
    note_path = directory / f"{digest}.json"
    unchanged = False
    if not durable:  # the caller syncs the batch; a durable write always writes and flushes
        try:
            unchanged = note_path.read_bytes() == encoded  # a re-run: the same note is there
        except OSError:
            unchanged = False
    if not unchanged:
        atomic_write(note_path, encoded, durable=durable)
    return str(sealed_path if data is not None else directory / f"{digest}.json")


def quarantine_processed(
    directory: Path, key: ProjectKey, processed: Processed, data: bytes, source: str, *, durable: bool = True
) -> str:
    """Seal an input that ``process_bytes`` quarantined, with its reason."""
    return quarantine_input(
        directory,
        key,
        processed.input_sha256,
        data,
        processed.reason or "",
        processed.detail,
        source,
        durable=durable,
    )


def _insert_ignore(session: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    dialect = session.dialect.name
    if dialect == "sqlite":
        session.execute(sqlite_insert(table).on_conflict_do_nothing(index_elements=keys), rows)
    elif dialect == "postgresql":
        session.execute(pg_insert(table).on_conflict_do_nothing(index_elements=keys), rows)
    else:  # generic: check first
        for row in rows:
            cond = [table.c[k] == row[k] for k in keys]
            if session.execute(select(table.c.id).where(*cond)).first() is None:
                session.execute(insert(table), [row])


_Keys = tuple[str, ...]
_Binding = tuple[str, Callable[[Any], Any] | None]  # parameter name, its bind processor


class _SqliteStatements:
    """The recorder's statements on SQLite, run on the DB-API cursor of the transaction's
    connection: compiled by SQLAlchemy once per table and column set, values converted by the
    columns' own bind processors (rows are stored exactly as Core stores them). Core's work
    per statement (cache keys, parameter processing, result objects) cost several times what
    SQLite itself spends on the gateway's one-instance batches."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._inserts: dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[str, list[_Binding]]] = {}
        self._known = f"SELECT sha256 FROM {Instance.__tablename__} WHERE sha256 IN "

    def _compiled(
        self, table: Any, columns: tuple[str, ...], conflict: tuple[str, ...]
    ) -> tuple[str, list[_Binding]]:
        key = (table.name, columns, conflict)
        compiled = self._inserts.get(key)
        if compiled is None:
            statement = sqlite_insert(table)
            if conflict:
                statement = statement.on_conflict_do_nothing(index_elements=list(conflict))
            sql = statement.compile(dialect=self.dialect, column_keys=list(columns))
            order = list(sql.positiontup or ())
            if sorted(order) != sorted(columns):
                raise RuntimeError(f"unexpected parameters in the insert into {table.name}")
            bindings = [
                (name, table.c[name].type.dialect_impl(self.dialect).bind_processor(self.dialect))
                for name in order
            ]
            compiled = self._inserts[key] = (sql.string, bindings)
        return compiled

    def insert(
        self, cursor: Any, table: Any, rows: list[dict[str, Any]], conflict: tuple[str, ...] = ()
    ) -> None:
        """``INSERT`` the rows (``ON CONFLICT DO NOTHING`` on ``conflict`` when given)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for columns, same in groups.items():
            sql, bindings = self._compiled(table, columns, conflict)
            values = [
                tuple(row[name] if process is None else process(row[name]) for name, process in bindings)
                for row in same
            ]
            cursor.executemany(sql, values)

    def known(self, cursor: Any, digests: list[str]) -> set[str]:
        """Which of ``digests`` are stored instances already."""
        placeholders = ", ".join("?" * len(digests))
        return {row[0] for row in cursor.execute(f"{self._known}({placeholders})", digests)}


class SqliteConnections:
    """DB-API connections of a SQLite engine for the gateway's hot path, kept out of the
    engine's pool: checking a connection out of and back into a SQLAlchemy pool (and Core's
    ``begin``/``commit`` around it) cost about as much as the insert and the lookup themselves.

    Each connection is made by the engine (its ``connect`` events: WAL, busy timeout, foreign
    keys, ``synchronous=FULL`` on the ingestor's engine), then detached from its pool, so it is
    set up exactly as the engine's own. A thread takes an idle connection for one use and puts
    it back (``list.pop``/``append`` are atomic); transactions begin as pysqlite begins them
    (before the first write) and end with ``commit``, or ``rollback`` on error. Connections are
    per process: those inherited through a fork are left alone (never used, never closed).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pid = os.getpid()
        self._idle: list[tuple[sqlite3.Connection, object]] = []
        self._inherited: list[tuple[sqlite3.Connection, object]] = []

    def _new(self) -> tuple[sqlite3.Connection, object]:
        proxied = self.engine.raw_connection()
        connection = proxied.dbapi_connection
        proxied.detach()  # ours now: no pool reset, no finalizer; the proxy is kept with it
        assert isinstance(connection, sqlite3.Connection)
        return connection, proxied

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """An idle connection (or a new one) for the block; rolled back if the block raises."""
        if self._pid != os.getpid():
            self._inherited.extend(self._idle)
            self._idle, self._pid = [], os.getpid()
        try:
            held = self._idle.pop()
        except IndexError:
            held = self._new()
        connection = held[0]
        try:
            yield connection
        except BaseException:
            try:
                connection.rollback()
            except BaseException:
                connection.close()
                raise
            self._idle.append(held)
            raise
        self._idle.append(held)

    def close(self) -> None:
        while self._idle and self._pid == os.getpid():
            self._idle.pop()[0].close()


class CatalogRecorder:
    """Writes instances, quarantine, lineage and sealed originals in one transaction per batch."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        profile: str,
        key_id: str,
        step: str,
        record_instances: bool,
        connections: SqliteConnections | None = None,
    ) -> None:
        """``connections``: on SQLite, batches are recorded on these DB-API connections (the
        same statements and values; no SQLAlchemy connection per batch)."""
        self.catalog = catalog
        self.profile = profile
        self.key_id = key_id
        self.step = step
        self.record_instances = record_instances
        self.connections = connections
        self._sqlite: _SqliteStatements | None = None

    def _statements(self, session: Connection) -> _SqliteStatements | None:
        if session.dialect.name != "sqlite":
            return None
        return self._statements_for(session.dialect)

    def _statements_for(self, dialect: Dialect) -> _SqliteStatements:
        if self._sqlite is None or self._sqlite.dialect is not dialect:
            self._sqlite = _SqliteStatements(dialect)
        return self._sqlite

    def known_outputs(self, session: Connection, digests: list[str]) -> set[str]:
        if not digests:
            return set()
        statements = self._statements(session)
        if statements is not None:
            return statements.known(_cursor(session), digests)
        rows = session.execute(select(Instance.sha256).where(Instance.sha256.in_(digests)))
        return {row[0] for row in rows}

    def _insert(
        self, session: Connection, table: Any, rows: list[dict[str, Any]], conflict: tuple[str, ...] = ()
    ) -> None:
        """Insert ``rows``; with ``conflict``, rows clashing on those columns are skipped."""
        if not rows:
            return
        statements = self._statements(session)
        if statements is not None:
            statements.insert(_cursor(session), table, rows, conflict)
        elif conflict:
            _insert_ignore(session, table, rows, list(conflict))
        else:
            session.execute(insert(table), rows)

    def record(
        self, results: list[Result], before_commit: Callable[[], object] | None = None
    ) -> list[Result]:
        """Record a batch durably; results whose output is already stored become ``duplicate``.
        ``before_commit`` runs after the inserts, inside the transaction (raise to roll back)."""
        now = utcnow()
        if self.connections is not None:
            statements = self._statements_for(self.connections.engine.dialect)
            with self.connections.connection() as connection:
                cursor = connection.cursor()

                def known(digests: list[str]) -> set[str]:
                    return statements.known(cursor, digests) if digests else set()

                def insert_rows(table: Any, rows: list[dict[str, Any]], conflict: _Keys = ()) -> None:
                    if rows:
                        statements.insert(cursor, table, rows, conflict)

                self._write(results, now, known, insert_rows)
                if before_commit is not None:
                    before_commit()
                connection.commit()
            return results
        # A Core connection, not an ORM session (a session costs about as much again as the
        # inserts on the gateway's one-instance batches); on SQLite, the statements run on its
        # DB-API cursor (``_SqliteStatements``).
        with self.catalog.engine.begin() as session:
            self._write(
                results,
                now,
                lambda digests: self.known_outputs(session, digests),
                lambda table, rows, conflict=(): self._insert(session, table, rows, conflict),
            )
            if before_commit is not None:
                before_commit()
        return results

    def record_on(self, session: Connection, results: list[Result]) -> list[Result]:
        """Write a batch's rows on ``session``, in the caller's transaction (which the caller
        commits): for callers that check or lock rows in the same transaction first."""
        self._write(
            results,
            utcnow(),
            lambda digests: self.known_outputs(session, digests),
            lambda table, rows, conflict=(): self._insert(session, table, rows, conflict),
        )
        return results

    def _write(
        self,
        results: list[Result],
        now: datetime,
        known_outputs: Callable[[list[str]], set[str]],
        insert_rows: Callable[..., None],
    ) -> None:
        """The batch's statements, in its transaction."""
        if self.record_instances:
            known = known_outputs([r.output_sha256 for r in results if r.output_sha256])
            for r in results:
                if r.output_sha256 in known and r.outcome == Outcome.DEIDENTIFIED.value:
                    r.outcome = "duplicate"
        pseudonyms = [
            {
                "kind": s.kind,
                "pseudonym": s.pseudonym,
                "lookup": s.lookup,
                "sealed_original": s.sealed,
                "key_id": self.key_id,
                "created_at": now,
            }
            for r in results
            for s in r.sealed
        ]
        keys: tuple[str, ...] = ("kind", "lookup")
        insert_rows(Pseudonym.__table__, _unique(pseudonyms, keys), keys)
        quarantined = [
            {
                "input_sha256": r.input_sha256,
                "reason": r.reason or "",
                "detail": r.detail,
                "path": r.location or "",
                "source": r.source,
                "size": r.input_size,
                "created_at": now,
            }
            for r in results
            if r.outcome == Outcome.QUARANTINED.value
        ]
        keys = ("input_sha256",)
        insert_rows(QuarantineRecord.__table__, _unique(quarantined, keys), keys)
        if self.record_instances:
            instances = [
                {
                    "sha256": r.output_sha256,
                    "input_sha256": r.input_sha256,
                    "store_key": r.location,
                    "size": r.summary.get("output_size", 0),
                    "profile": self.profile,
                    "key_id": self.key_id,
                    "transfer_syntax_uid": r.summary.get("transfer_syntax", ""),
                    "created_at": now,
                    **(r.instance or {}),
                }
                for r in results
                if r.outcome == Outcome.DEIDENTIFIED.value
            ]
            insert_rows(Instance.__table__, _unique(instances, ("sha256",)), ("sha256",))
        if results:
            lineage = [
                {
                    "step": self.step,
                    "outcome": r.outcome,
                    "input_sha256": r.input_sha256,
                    "output_sha256": r.output_sha256,
                    "profile": self.profile,
                    "key_id": self.key_id,
                    "source": r.source,
                    "software": SOFTWARE,
                    "details": r.summary,
                    "created_at": now,
                }
                for r in results
            ]
            insert_rows(LineageEvent.__table__, lineage)


def _cursor(session: Connection) -> Any:
    """A DB-API cursor on the connection of ``session`` (in its transaction)."""
    return session.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _unique(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in keys), row)
    return list(seen.values())
