"""Many inputs, in parallel across cores: de-identify into a folder or into the store.

Workers read, de-identify and write their own outputs (nothing large crosses a pipe); the
parent records each batch in the catalog in one transaction and keeps the counts.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from governance.catalog import open_catalog
from governance.keys import ProjectKey, load_project_key
from governance.settings import Settings, get_settings
from imaging.deid import Deidentifier, DeidProfile, QuarantineReason, load_profile
from imaging.ingest.recorder import (
    CatalogRecorder,
    Result,
    quarantine_input,
    quarantine_processed,
    result_from,
)
from imaging.pipeline import Outcome, process_bytes, quiet_pydicom
from imaging.store import ContentStore, atomic_write

__all__ = ["RunReport", "Sink", "iter_files", "run_files"]

_BATCH = 64


class Sink(StrEnum):
    FOLDER = "folder"  # radgate deid: OUTPUT/<study>/<series>/<sop>.dcm
    STORE = "store"  # radgate ingest: the content-addressed store + catalog instances


@dataclass
class RunReport:
    inputs: int = 0
    deidentified: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    profile: str = ""
    key_id: str = ""
    workers: int = 1

    def add(self, result: Result) -> None:
        self.inputs += 1
        if result.outcome == Outcome.QUARANTINED.value:
            self.quarantined += 1
            self.reasons[result.reason or "unknown"] += 1
        else:
            # A duplicate is an input that is de-identified and already held: it counts as such.
            self.deidentified += 1
            self.duplicates += result.outcome == "duplicate"
            self.actions.update(result.summary.get("actions", {}))

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "deidentified": self.deidentified,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "quarantine_reasons": dict(self.reasons),
            "actions": dict(self.actions),
            "profile": self.profile,
            "key_id": self.key_id,
            "workers": self.workers,
            "elapsed_s": round(self.elapsed_s, 3),
            "files_per_s": round(self.inputs / self.elapsed_s, 1) if self.elapsed_s else None,
        }


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Regular files under the given files and folders, in a stable order (links not followed)."""
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    candidate = Path(root) / name
                    if candidate.is_file() and not candidate.is_symlink():
                        yield candidate


@dataclass
class _Job:
    """What a worker needs (picklable)."""

    profile: DeidProfile
    secret: bytes
    sink: Sink
    output_dir: str
    store_root: str
    quarantine_dir: str
    source: str


_state: dict[str, Any] = {}


def _init(job: _Job) -> None:
    quiet_pydicom()
    key = ProjectKey(job.secret)
    _state.update(
        job=job,
        key=key,
        deid=Deidentifier(job.profile, key),
        store=ContentStore(job.store_root) if job.sink is Sink.STORE else None,
    )


def _source_label(job: _Job, path: Path) -> str:
    # File names can hold patient names: lineage keeps a keyed digest of the path, not the path.
    digest = _state["deid"].pseudonyms.lookup("path", str(path))[:16]
    return f"{job.source}:{digest}"


def _read(path: Path, limit: int) -> tuple[bytes | None, str | None, int, str | None]:
    """Bytes (None when too large or unreadable), sha256 (None for bytes read whole:
    ``process_bytes`` hashes them beside the parse), size, failure reason."""
    try:
        size = path.stat().st_size
        if size > limit:
            hasher = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(chunk)
            return None, hasher.hexdigest(), size, QuarantineReason.TOO_LARGE.value
        return path.read_bytes(), None, size, None
    except OSError as exc:
        digest = hashlib.sha256(f"unreadable:{path}".encode()).hexdigest()
        return None, digest, 0, f"{QuarantineReason.UNREADABLE.value}:{type(exc).__name__}"


def _process_path(path_str: str) -> Result:
    job: _Job = _state["job"]
    key: ProjectKey = _state["key"]
    path = Path(path_str)
    source = _source_label(job, path)
    data, digest, size, failure = _read(path, job.profile.max_bytes)
    if failure is not None or data is None:
        assert digest is not None
        reason, _, kind = (failure or "unreadable").partition(":")
        detail = (
            f"{size} bytes exceeds limit {job.profile.max_bytes}"
            if reason == "too_large"
            else f"cannot read ({kind})"
        )
        location = quarantine_input(
            Path(job.quarantine_dir), key, digest, None, reason, detail, source, durable=False
        )
        return Result(
            digest,
            size,
            Outcome.QUARANTINED.value,
            source,
            location=location,
            reason=reason,
            detail=detail,
            summary={"outcome": "quarantined", "reason": reason, "detail": detail},
        )
    processed = process_bytes(data, _state["deid"], key, job.profile, digest=digest)
    if processed.outcome is Outcome.QUARANTINED:
        location = quarantine_processed(Path(job.quarantine_dir), key, processed, data, source, durable=False)
        return result_from(processed, source, location)
    assert processed.record is not None and processed.output_parts is not None
    if job.sink is Sink.STORE:
        location = _state["store"].put(processed.output, durable=False, digest=processed.output_sha256)
    else:
        r = processed.record
        target = (
            Path(job.output_dir) / (r.study_instance_uid or "nostudy") / (r.series_instance_uid or "noseries")
        )
        target = target / f"{r.sop_instance_uid or processed.output_sha256}.dcm"
        atomic_write(target, processed.output_parts, durable=False)
        location = str(target)
    return result_from(processed, source, location)


def run_files(
    files: list[Path],
    *,
    sink: Sink,
    output_dir: Path | None = None,
    profile: DeidProfile | str | None = None,
    workers: int = 1,
    source: str = "folder",
    settings: Settings | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> RunReport:
    """De-identify ``files``; every input ends de-identified or quarantined, and is recorded."""
    settings = settings or get_settings()
    profile = profile if isinstance(profile, DeidProfile) else load_profile(profile)
    key = load_project_key(settings)
    catalog = open_catalog(settings)
    if sink is Sink.FOLDER and output_dir is None:
        raise ValueError("a folder sink needs output_dir")
    job = _Job(
        profile=profile,
        secret=key.secret,
        sink=sink,
        output_dir=str(output_dir or ""),
        store_root=settings.resolved_object_store,
        quarantine_dir=str(settings.quarantine_dir),
        source=source,
    )
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.quarantine_dir, 0o700)
    recorder = CatalogRecorder(
        catalog,
        profile=profile.label,
        key_id=key.key_id,
        step="deid" if sink is Sink.FOLDER else "ingest",
        record_instances=sink is Sink.STORE,
    )
    report = RunReport(profile=profile.label, key_id=key.key_id, workers=max(1, workers))
    start = time.perf_counter()
    pending: list[Result] = []
    # One batch is made durable and recorded in a background thread while the next is being
    # processed (os.sync waits on the disk, not the CPU); at most one batch is in flight, and
    # every batch is synced before its records are committed, as before.
    recording = ThreadPoolExecutor(1, thread_name_prefix="radgate-record")
    in_flight: list[Future[None]] = []

    def commit(batch: list[Result]) -> None:
        # Workers write without fsync; one sync makes the batch durable before it is recorded.
        os.sync()
        for result in recorder.record(batch):
            report.add(result)

    def flush() -> None:
        while in_flight:
            in_flight.pop().result()  # raises what recording raised
        if pending:
            in_flight.append(recording.submit(commit, pending.copy()))
            pending.clear()

    names = [str(f) for f in files]
    if workers <= 1:
        _init(job)
        results: Iterable[Result] = map(_process_path, names)
        pool = None
    else:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(job,))
        # Small chunks: file sizes vary by 1000x, and a big chunk at the end idles the other cores.
        results = pool.map(_process_path, names, chunksize=max(1, min(4, len(names) // (workers * 16) or 1)))
    try:
        for result in results:
            pending.append(result)
            if on_result is not None:
                on_result(result)
            if len(pending) >= _BATCH:
                flush()
        flush()
        flush()  # waits for the last batch
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        recording.shutdown(wait=True)
    report.elapsed_s = time.perf_counter() - start
    _audit_run(report, recorder.step)
    return report


def _audit_run(report: RunReport, step: str) -> None:
    """One audit entry per run: counts, profile and key id (never names, paths or UIDs)."""
    from governance.audit import record
    from governance.auth import current_actor

    actor, role = current_actor()
    details = {k: v for k, v in report.as_dict().items() if k not in ("actions",)}
    record(actor, f"{step}.run", f"profile:{report.profile}", details, role=role)
