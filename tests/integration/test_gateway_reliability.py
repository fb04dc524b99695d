"""Reliability of the gateway: concurrent associations, SIGKILL mid-transfer, SIGTERM drain.

The rule under test: a C-STORE success is sent only once the de-identified object is in the
store and its catalog record is committed, so a success is never lost, and a resend after a
crash duplicates nothing.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from governance.catalog import Instance, open_catalog
from governance.settings import get_settings
from tests.integration.conftest import gateway_config, write_ct_series

pytestmark = pytest.mark.integration

SUCCESS = "Received Store Response (Success)"


def _storescu(port: int, files: list[Path], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["storescu", "-v", "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", str(port), *map(str, files)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(process: subprocess.Popen[str]) -> Iterator[str]:
    assert process.stderr is not None
    while line := process.stderr.readline():  # not ``yield from``: a break would close the pipe
        yield line


def _instances() -> list[Instance]:
    with open_catalog().session() as session:
        return list(session.scalars(select(Instance)))


def _store_files() -> dict[str, Path]:
    root = Path(get_settings().resolved_object_store)
    return {p.stem: p for p in root.rglob("*.dcm")}


def _temp_files() -> list[Path]:
    settings = get_settings()
    roots = [Path(settings.resolved_object_store), settings.quarantine_dir]
    return [p for root in roots if root.exists() for p in root.rglob(".tmp-*")]


def _assert_store_matches_catalog(expected: int) -> None:
    """Exactly ``expected`` instances; every object intact; no orphan, partial or temp file."""
    instances = _instances()
    assert len(instances) == expected
    assert len({i.sop_instance_uid for i in instances}) == expected
    files = _store_files()
    assert set(files) == {i.sha256 for i in instances}
    for key, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == key
    assert _temp_files() == []


def test_four_concurrent_associations_of_250(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    batches = [write_ct_series(tmp_path / f"sender-{n}", 250, patient_id=f"P{n}") for n in range(4)]
    gateway = start_gateway(gateway_config())
    senders = [_storescu(gateway.dicom_port, files, dicom_env) for files in batches]
    successes = [0] * len(senders)

    def count(index: int) -> None:
        successes[index] = sum(SUCCESS in line for line in _lines(senders[index]))

    threads = [threading.Thread(target=count, args=(i,)) for i in range(len(senders))]
    for thread in threads:
        thread.start()
    for thread, sender in zip(threads, senders, strict=True):
        thread.join()
        assert sender.wait() == 0
    assert successes == [250, 250, 250, 250]
    _assert_store_matches_catalog(1000)
    with open_catalog().session() as session:
        patients = session.scalar(select(func.count(func.distinct(Instance.patient_pseudonym))))
    assert patients == 4
    final = gateway.terminate()
    assert final["stored"] == 1000 and final["failed"] == 0 and final["associations"] == 4


def test_sigkill_mid_transfer_then_resend(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "study", 150)
    config = gateway_config()
    gateway = start_gateway(config)
    sender = _storescu(gateway.dicom_port, files, dicom_env)
    acknowledged = 0
    for line in _lines(sender):
        if SUCCESS in line:
            acknowledged += 1
            if acknowledged == 40:
                gateway.kill()  # SIGKILL: no drain, no clean-up
                break
    for _ in _lines(sender):
        pass
    assert sender.wait() != 0  # the sender saw the association drop

    # Every success the sender heard is durable: the first 40 files (one more may have been
    # committed whose response was lost with the process).
    survivors = _instances()
    assert acknowledged <= len(survivors) <= acknowledged + 1
    store = _store_files()
    for instance in survivors:
        assert hashlib.sha256(store[instance.sha256].read_bytes()).hexdigest() == instance.sha256

    # Restart on the same RADGATE_HOME and resend everything, as a PACS retries a failed job.
    restarted = start_gateway(config)
    resend = _storescu(restarted.dicom_port, files, dicom_env)
    resent = sum(SUCCESS in line for line in _lines(resend))
    assert resend.wait() == 0
    assert resent == 150
    _assert_store_matches_catalog(150)  # nothing lost, nothing duplicated, no orphan
    assert restarted.terminate()["failed"] == 0


def test_sigterm_drains_the_association_in_flight(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "study", 80)
    gateway = start_gateway(gateway_config())
    sender = _storescu(gateway.dicom_port, files, dicom_env)
    acknowledged = 0
    for line in _lines(sender):
        if SUCCESS in line:
            acknowledged += 1
            if acknowledged == 10:
                gateway.terminate_nowait()  # SIGTERM: stop accepting, finish what is in flight
    assert sender.wait() == 0
    assert acknowledged == 80
    late = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", str(gateway.dicom_port)],
        env=dicom_env,
        capture_output=True,
    )
    final = gateway.terminate()
    assert gateway.process.returncode == 0
    assert late.returncode != 0  # no new association once draining started
    assert final["aborted_associations"] == 0
    assert final["stored"] == 80
    _assert_store_matches_catalog(80)


def test_worker_processes_share_the_port_and_die_with_the_gateway(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    import psutil

    batches = [write_ct_series(tmp_path / f"sender-{n}", 40, patient_id=f"W{n}") for n in range(4)]
    config = gateway_config()
    config["dicom"]["workers"] = 2
    gateway = start_gateway(config)
    assert gateway.ready["workers"] == 2
    workers = psutil.Process(gateway.process.pid).children()
    assert len(workers) == 2
    senders = [_storescu(gateway.dicom_port, files, dicom_env) for files in batches]
    results = [sender.communicate()[1] for sender in senders]
    assert [sender.returncode for sender in senders] == [0, 0, 0, 0]
    assert [err.count(SUCCESS) for err in results] == [40, 40, 40, 40]
    _assert_store_matches_catalog(160)
    final = gateway.terminate()
    assert final["stored"] == 160 and final["associations"] == 4 and not final["failed_worker"]
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []

    # SIGKILL of the gateway takes its workers with it: no orphan keeps the port.
    again = start_gateway(config)
    workers = psutil.Process(again.process.pid).children()
    again.kill()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []
    echo = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", str(again.dicom_port)],
        env=dicom_env,
        capture_output=True,
    )
    assert echo.returncode != 0
