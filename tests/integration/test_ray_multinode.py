"""Distributed intake on a real two-node Ray cluster on 127.0.0.1 (``ray start --head`` with one
CPU, then ``ray start --address`` with one CPU and its own temp dir), the catalog on PostgreSQL 15
and inputs and store on an S3 server (moto), each a separate process started here.

The worker node is killed (SIGKILL to its whole process group) while the job runs: the job
finishes on the head, every input is recorded exactly once, the counts add up, pseudonyms and
UIDs agree across the nodes, and a rerun through the CLI resumes without writing anything. A
PostgreSQL restart and an S3 outage in the middle of a task are retried with backoff; an outage
that outlasts the retries stops the task with a clear error, and a rerun completes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import load_script, write_ct_series

pytestmark = pytest.mark.integration

pg_ci = load_script("scripts/ci/postgres.py", "radgate_ci_postgres")
s3_ci = load_script("scripts/ci/s3.py", "radgate_ci_s3")
ray_head_ci = load_script("scripts/ci/ray_head.py", "radgate_ci_ray_head")
ray_worker_ci = load_script("scripts/ci/ray_worker.py", "radgate_ci_ray_worker")
BUCKET = "radgate-multinode"
KEY = "11" * 32  # the test suite's project key (tests/conftest.py): every node has the same


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if pg_ci.find_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql-15)")
    import moto.server  # noqa: F401 (s3fs and moto come with the [test] extra: missing is a failure)
    import s3fs  # noqa: F401

    pg_dir = pg_ci.scratch_dir()
    postgres = pg_ci.PostgresCluster(pg_dir)
    s3 = s3_ci.S3Server(tmp_path_factory.mktemp("s3"))
    try:
        postgres.start()
        s3.start()
        s3.create_bucket(BUCKET)
        yield {"postgres": postgres, "s3": s3}
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)


@pytest.fixture
def scaled(
    services: dict[str, Any], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The test's own database and store prefix, selected by settings only."""
    from s3fs import S3FileSystem

    from governance.settings import get_settings

    name = request.node.name.removeprefix("test_")[:40]
    url = services["postgres"].create_database(name)
    for key, value in services["s3"].env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RADGATE_CATALOG_URL", url)
    monkeypatch.setenv("RADGATE_OBJECT_STORE", f"s3://{BUCKET}/{name}/store")
    get_settings.cache_clear()
    S3FileSystem.clear_instance_cache()
    yield {**services, "database": url.rsplit("/", 1)[1], "prefix": name}
    S3FileSystem.clear_instance_cache()


def _upload_inputs(s3: Any, prefix: str, folder: Path) -> dict[str, Any]:
    """40 one-image studies of 10 patients, one 12-instance CT series (one study, one patient),
    a byte-identical copy of one file and one file that is not DICOM, under ``prefix/in/``."""
    from imaging.demo_data import write_demo_studies

    demo = write_demo_studies(folder / "demo", patients=10, images_per_patient=4, seed=7, size=32)
    series = write_ct_series(folder / "ct", 12, patient_id="CT-PAT-9", patient_name="Roe^Richard")
    files = [*demo.files, *series]
    client = s3.client()
    for index, path in enumerate(files):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/{index:04d}.dcm", Body=path.read_bytes())
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/copy.dcm", Body=files[3].read_bytes())
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/notes.dcm", Body=b"not a DICOM file\n" * 8)
    return {"inputs": len(files) + 2, "dicom": len(files), "studies": len(demo.studies) + 1, "patients": 11}


def _job_rows(postgres: Any, database: str, job_id: str) -> list[tuple[Any, ...]]:
    return postgres.query(
        database,
        f"SELECT source, outcome FROM lineage WHERE step = 'ingest' AND source LIKE 'ray:{job_id}:%'",
    )


def _check_catalog(scaled: dict[str, Any], report: Any, expected: dict[str, Any]) -> None:
    """Each input recorded once; one object per instance; pseudonyms consistent."""
    postgres, database = scaled["postgres"], scaled["database"]
    rows = _job_rows(postgres, database, report.job_id)
    assert len(rows) == len({source for source, _ in rows}) == expected["inputs"]
    outcomes = [outcome for _, outcome in rows]
    assert outcomes.count("deidentified") == report.deidentified == expected["dicom"]
    assert outcomes.count("duplicate") == report.duplicates == 1
    assert outcomes.count("quarantined") == report.quarantined == 1
    assert postgres.query(database, "SELECT count(*), count(DISTINCT input_sha256) FROM instances")[0] == (
        expected["dicom"],
        expected["dicom"],
    )
    assert postgres.query(database, "SELECT count(*) FROM quarantine")[0][0] == 1
    # Same patient, same pseudonym; same study, same UID, whichever node de-identified it.
    assert postgres.query(database, "SELECT count(DISTINCT patient_pseudonym) FROM instances")[0][0] == 11
    assert (
        postgres.query(database, "SELECT count(DISTINCT study_instance_uid) FROM instances")[0][0]
        == (expected["studies"])
    )
    per_study = postgres.query(
        database, "SELECT count(DISTINCT patient_pseudonym) FROM instances GROUP BY study_instance_uid"
    )
    assert {count for (count,) in per_study} == {1}
    series = postgres.query(
        database, "SELECT count(*) FROM instances GROUP BY series_instance_uid HAVING count(*) > 1"
    )
    assert series == [(12,)]
    stored = {
        key.rsplit("/", 1)[1].removesuffix(".dcm")
        for key in scaled["s3"].keys(BUCKET, f"{scaled['prefix']}/store/")
    }
    recorded = {row[0] for row in postgres.query(database, "SELECT sha256 FROM instances")}
    assert stored == recorded
    # The input that is not DICOM: sealed, with its note, beside the store (every node reaches it).
    (digest,) = postgres.query(database, "SELECT input_sha256 FROM quarantine")[0]
    quarantined = scaled["s3"].keys(BUCKET, f"{scaled['prefix']}/store-quarantine/")
    assert sorted(k.rsplit("/", 1)[1] for k in quarantined) == [f"{digest}.json", f"{digest}.sealed"]


def test_worker_node_killed_mid_run_job_finishes_on_the_head(
    scaled: dict[str, Any], tmp_path: Path, as_role: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    from imaging.ingest.distributed import ClusterIngestReport, ingest_on_cluster

    expected = _upload_inputs(scaled["s3"], scaled["prefix"], tmp_path / "inputs")
    source = f"s3://{BUCKET}/{scaled['prefix']}/in"
    # Every node's environment: the same project key, the S3 endpoint; a node's death is noticed
    # within seconds (Ray's default health check gives up after 15 s).
    monkeypatch.setenv("RADGATE_PROJECT_KEY", KEY)
    monkeypatch.setenv("RAY_health_check_period_ms", "1000")
    monkeypatch.setenv("RAY_health_check_timeout_ms", "1000")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    head = ray_head_ci.RayHead(num_cpus=1)
    worker = None
    try:
        head.start()
        worker = ray_worker_ci.RayWorker(head.address, num_cpus=1).start()
        ray.init(address=head.address, log_to_driver=False)
        killed: list[float] = []

        def kill_worker_once_it_has_worked(report: ClusterIngestReport) -> None:
            assert worker is not None
            if not killed and report.files_per_node.get(worker.node_id[:12], 0) > 0:
                worker.kill()  # its other chunks are in flight: they must run again on the head
                killed.append(report.done)

        try:
            report = ingest_on_cluster(source, chunk_size=4, on_progress=kill_worker_once_it_has_worked)
            # The job can finish on the head before the GCS's health check (3 x 1 s) declares
            # the killed node dead: wait for that verdict (bounded) before reading it.
            deadline = time.monotonic() + 60
            alive = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
            while worker.node_id in alive and time.monotonic() < deadline:
                time.sleep(0.5)
                alive = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
        finally:
            ray.shutdown()
        assert killed and killed[0] < expected["inputs"], "the worker node was not killed mid-run"
        assert worker.node_id not in alive
        assert report.inputs == expected["inputs"]
        assert report.deidentified + report.quarantined + report.duplicates == report.inputs
        assert report.resumed == 0 and dict(report.reasons) == {"not_dicom": 1}
        assert set(report.files_per_node) >= {worker.node_id[:12]} and len(report.files_per_node) == 2
        _check_catalog(scaled, report, expected)

        # A rerun through the CLI on what is left of the cluster (the head) resumes: every input
        # is found recorded by this job, nothing is written again, the counts are the same.
        as_role("data-steward")
        radgate = Path(sys.executable).with_name("radgate")
        command = [str(radgate), "ingest", source, "--ray-address", head.address]
        result = subprocess.run(
            [*command, "--report", str(tmp_path / "r.json")],
            capture_output=True, text=True, timeout=300, env=dict(os.environ),
        )  # fmt: skip
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["job_id"] == report.job_id
    assert again["resumed"] == again["inputs"] == expected["inputs"]
    assert (again["deidentified"], again["duplicates"], again["quarantined"]) == (
        report.deidentified,
        report.duplicates,
        report.quarantined,
    )
    _check_catalog(scaled, report, expected)
    audit = scaled["postgres"].query(
        scaled["database"], "SELECT count(*) FROM audit_log WHERE action = 'ingest.run'"
    )
    assert audit[0][0] == 2


class _Outage:
    """A TCP relay in front of a server that can be taken down (new connections refused, open
    ones cut) and brought back on the same port: an outage as the clients see it."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = ray_worker_ci.free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_catalog_and_store_outages_mid_task_are_retried_then_reported(
    scaled: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3fs import S3FileSystem

    from governance.catalog import open_catalog
    from governance.keys import load_project_key
    from governance.settings import get_settings
    from imaging.deid import Deidentifier, load_profile
    from imaging.ingest.distributed import IntakeUnavailable, JobSpec, list_source, run_chunk

    expected = _upload_inputs(scaled["s3"], scaled["prefix"], tmp_path / "inputs")
    postgres = scaled["postgres"]
    relay = _Outage(int(scaled["s3"].port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    S3FileSystem.clear_instance_cache()
    settings = get_settings()
    open_catalog(settings)
    key = load_project_key(settings)
    profile = load_profile(None)
    spec = JobSpec(
        job_id="outagetest000001", profile=profile, key_id=key.key_id, sealer=key.sealer,
        catalog_url=settings.resolved_catalog_url, store_root=settings.resolved_object_store,
        quarantine_root=settings.resolved_object_store + "-quarantine", attempts=6, backoff_s=0.5,
    )  # fmt: skip
    deid = Deidentifier(profile, key)
    names = list_source(f"s3://{BUCKET}/{scaled['prefix']}/in")
    items = [(name, deid.pseudonyms.lookup("path", name)[:16]) for name in names]
    assert len(items) == expected["inputs"]

    # PostgreSQL restarts and S3 goes away for a few seconds while the task runs: both retried.
    outcome: dict[str, Any] = {}
    task = threading.Thread(target=lambda: outcome.update(report=run_chunk(spec, items)))
    task.start()
    store_prefix = f"{scaled['prefix']}/store/"
    deadline = time.monotonic() + 120
    while len(scaled["s3"].keys(BUCKET, store_prefix)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)  # (straight to the server, not through the relay)
    assert task.is_alive(), "the task finished before the outage"
    relay.down()
    postgres.stop()
    time.sleep(3.0)
    postgres.start()
    relay.up()
    task.join(240)
    assert not task.is_alive() and "report" in outcome, "the task did not finish after the outage"
    report = outcome["report"]
    assert report.files == expected["inputs"] == report.deidentified + report.quarantined + report.duplicates
    rows = _job_rows(postgres, scaled["database"], spec.job_id)
    assert len(rows) == len({s for s, _ in rows}) == expected["inputs"]

    # The same task again (a retried or duplicated task): all found recorded, nothing written.
    again = run_chunk(spec, items)
    assert again.resumed == again.files == expected["inputs"]
    assert (again.deidentified, again.duplicates, again.quarantined) == (
        report.deidentified, report.duplicates, report.quarantined,
    )  # fmt: skip
    assert len(_job_rows(postgres, scaled["database"], spec.job_id)) == expected["inputs"]

    # An outage that outlasts the retries: a clear error (what, how often, no URL or secret).
    fresh = dataclasses.replace(spec, job_id="outagetest000002", attempts=2, backoff_s=0.05)
    postgres.stop()
    try:
        with pytest.raises(IntakeUnavailable) as failed:
            run_chunk(fresh, items[:3])
    finally:
        postgres.start()
    message = str(failed.value)
    assert message.startswith("catalog unavailable after 2 attempts") and "rerun to resume" in message
    assert postgres.password not in message and "127.0.0.1" not in message
    # ... and the rerun completes it.
    done = run_chunk(fresh, items[:3])
    assert done.files == 3 and done.resumed == 0
    relay.down()
