"""The distributed intake's pieces without a cluster: listing a source (folder, manifest, single
file), the job id a rerun resumes under, retries with backoff, and exactly-once commits when the
same chunk runs twice, one after the other or at the same time (the embedded SQLite catalog and
local store; the multi-node test runs the same on PostgreSQL and S3)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from imaging.ingest.distributed import (
    IntakeUnavailable,
    JobSpec,
    SourceError,
    job_id_for,
    list_source,
    run_chunk,
    with_backoff,
)


def _spec(attempts: int = 3) -> JobSpec:
    from governance.catalog import open_catalog
    from governance.keys import load_project_key
    from governance.settings import get_settings
    from imaging.deid import load_profile

    settings = get_settings()
    open_catalog(settings)
    key = load_project_key(settings)
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
    return JobSpec(
        job_id=job_id_for(str(settings.home), "research@v1", key.key_id),
        profile=load_profile(None),
        key_id=key.key_id,
        sealer=key.sealer,
        catalog_url=settings.resolved_catalog_url,
        store_root=settings.resolved_object_store,
        quarantine_root=str(settings.quarantine_dir),
        attempts=attempts,
        backoff_s=0.001,
    )


def test_listing_a_folder_a_manifest_and_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    for name in ("b/2.dcm", "a.dcm", "b/1.dcm"):
        (folder / name).write_bytes(b"x")
    listed = list_source(str(folder))
    assert listed == [str(folder / "a.dcm"), str(folder / "b/1.dcm"), str(folder / "b/2.dcm")]
    manifest = tmp_path / "job.manifest"
    manifest.write_text(f"# the cohort\n\n{folder / 'a.dcm'}\ns3://bucket/x/1.dcm\n")
    assert list_source(str(manifest)) == [str(folder / "a.dcm"), "s3://bucket/x/1.dcm"]
    assert list_source(str(folder / "a.dcm")) == [str(folder / "a.dcm")]
    manifest.write_text("relative/path.dcm\n")
    with pytest.raises(SourceError, match="line 1: entries are absolute paths or URLs"):
        list_source(str(manifest))
    manifest.write_text("/" + "x" * 5000 + "\n")
    with pytest.raises(SourceError, match="longer than"):
        list_source(str(manifest))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no input files"):
        list_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="neither a folder"):
        list_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="more than 2 inputs"):
        list_source(str(folder), max_inputs=2)


def test_job_id_is_the_same_for_a_rerun_and_differs_by_profile_and_key(tmp_path: Path) -> None:
    same = job_id_for(str(tmp_path / "in"), "research@v1", "k1")
    assert same == job_id_for(f"file://{tmp_path}/in", "research@v1", "k1")
    assert same != job_id_for(str(tmp_path / "in"), "other@v1", "k1")
    assert same != job_id_for(str(tmp_path / "in"), "research@v1", "k2")


def test_backoff_retries_an_outage_then_names_it_without_its_address() -> None:
    spec = _spec(attempts=3)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("postgresql://u:secret@10.0.0.9"))
        return "done"

    assert with_backoff(spec, "catalog", flaky) == "done" and len(calls) == 3
    calls.clear()

    def down() -> str:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("postgresql://u:secret@10.0.0.9"))

    with pytest.raises(IntakeUnavailable) as failed:
        with_backoff(spec, "catalog", down)
    assert str(failed.value) == "catalog unavailable after 3 attempts (OperationalError); rerun to resume"
    assert len(calls) == 3

    def missing() -> str:
        calls.append(1)
        raise FileNotFoundError("an input vanished")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_backoff(spec, "input storage", missing)
    assert len(calls) == 1  # the input's own problem: not retried


def test_a_chunk_run_twice_or_twice_at_once_is_recorded_once(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from governance.catalog import Instance, LineageEvent, open_catalog
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(tmp_path / "in", patients=3, images_per_patient=2, size=32, seed=2)
    (tmp_path / "in" / "junk.dcm").write_bytes(b"not dicom")
    names = list_source(str(tmp_path / "in"))  # 6 DICOM, labels.csv, junk.dcm
    items = [(name, f"{i:016x}") for i, name in enumerate(names)]
    spec = _spec()
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(run_chunk(spec, items))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(reports) == 2
    for report in reports:  # each twin accounts for every input once, with the same outcomes
        assert report.files == len(items) == report.deidentified + report.quarantined + report.duplicates
        assert (report.deidentified, report.quarantined) == (len(demo.files), 2)
    again = run_chunk(spec, items)
    assert again.resumed == again.files == len(items)
    with open_catalog().session() as session:
        lineage = session.execute(
            select(func.count())
            .select_from(LineageEvent)
            .where(LineageEvent.source.startswith(f"ray:{spec.job_id}:"))
        ).scalar_one()
        instances = session.execute(select(func.count(func.distinct(Instance.input_sha256)))).scalar_one()
        rows = session.execute(select(func.count()).select_from(Instance)).scalar_one()
    assert lineage == len(items) and instances == rows == len(demo.files)


def test_a_node_whose_key_differs_refuses_to_work(tmp_path: Path) -> None:
    import dataclasses

    from imaging.ingest.distributed import KeyMismatch

    (tmp_path / "one.dcm").write_bytes(b"x")
    spec = dataclasses.replace(_spec(), job_id="keymismatch0001", key_id="0123456789abcdef")
    with pytest.raises(KeyMismatch, match="is not the job's"):
        run_chunk(spec, [(str(tmp_path / "one.dcm"), "0" * 16)])


def test_an_input_over_the_size_limit_is_quarantined_unread(tmp_path: Path) -> None:
    import dataclasses
    import tracemalloc

    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * (8 << 20))  # hashed in 1 MiB pieces, never held whole
    base = _spec()
    profile = base.profile.model_copy(update={"max_bytes": 1 << 20})
    spec = dataclasses.replace(base, job_id="toolarge00000001", profile=profile)
    run_chunk(dataclasses.replace(spec, job_id="toolarge00000000"), [(str(tmp_path / "none"), "0" * 16)])
    tracemalloc.start()
    try:
        report = run_chunk(spec, [(str(big), "1" * 16)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (report.quarantined, dict(report.reasons), report.bytes_in) == (1, {"too_large": 1}, 8 << 20)
    assert peak < 4 << 20, f"{peak} bytes held for an 8 MiB input over the limit"
