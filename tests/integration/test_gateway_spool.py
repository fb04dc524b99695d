"""``dicom.acknowledge: received``: the real gateway answers C-STORE once the sealed input is
durable in its spool; its drainer process de-identifies after. dcmtk's storescu sends; nothing
acknowledged is lost across a SIGKILL, nothing is stored twice, a full spool falls back to
ingesting in the association."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from governance.settings import get_settings
from tests.integration.conftest import gateway_config, write_ct_series
from tests.integration.test_gateway_reliability import SUCCESS, _assert_store_matches_catalog, _instances

pytestmark = pytest.mark.integration


def _received_config(**spool: Any) -> dict[str, Any]:
    config = gateway_config()
    config["dicom"]["acknowledge"] = "received"
    config["spool"] = {"drainers": 1, **spool}
    return config


def _send(port: int, files: list[Path], env: dict[str, str]) -> int:
    """storescu the files over one association; how many successes it heard."""
    result = subprocess.run(
        ["storescu", "-v", "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", str(port), *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-800:]
    return result.stderr.count(SUCCESS)


def _drainer(gateway: Any) -> psutil.Process:
    """The gateway's drainer: the child process that runs at a lower CPU priority."""
    children = psutil.Process(gateway.process.pid).children()
    (drainer,) = [child for child in children if child.nice() > 0]
    return drainer


def _spool_entries() -> list[Path]:
    """Filled slots (the spool also keeps empty ones made ahead)."""
    return sorted(p for p in (get_settings().home / "spool").glob("*.spool") if p.stat().st_size)


def _wait_for_instances(count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(_instances()) < count:
        assert time.monotonic() < deadline, f"{len(_instances())} of {count} instances after {timeout} s"
        time.sleep(0.2)


def test_acknowledged_when_spooled_then_drained(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "study", 30, patient_name="Spooled^Patient")
    gateway = start_gateway(_received_config())
    assert gateway.ready["acknowledge"] == "received"
    os.kill(_drainer(gateway).pid, signal.SIGSTOP)  # hold the drainer: every success is a spool entry
    try:
        assert _send(gateway.dicom_port, files, dicom_env) == 30
        entries = _spool_entries()
        assert len(entries) == 30 and _instances() == []
        for entry in entries:  # PHI at rest only sealed
            raw = entry.read_bytes()
            assert b"Spooled^Patient" not in raw and b"PAT-0001" not in raw
    finally:
        os.kill(_drainer(gateway).pid, signal.SIGCONT)
    _wait_for_instances(30)
    _assert_store_matches_catalog(30)
    final = gateway.terminate()
    assert final["stored"] == 30 and final["spooled"] == 30 and final["drained"] == 30
    assert final["failed"] == 0 and _spool_entries() == []


def test_sigkill_with_a_backlog_loses_nothing_and_stores_nothing_twice(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "study", 40)
    config = _received_config()
    gateway = start_gateway(config)
    os.kill(_drainer(gateway).pid, signal.SIGSTOP)
    assert _send(gateway.dicom_port, files[:25], dicom_env) == 25
    os.kill(_drainer(gateway).pid, signal.SIGCONT)
    gateway.kill()  # SIGKILL mid-drain (the drainer dies with it)
    left = len(_spool_entries())
    assert len(_instances()) + left >= 25  # each acknowledged instance: committed or still spooled

    restarted = start_gateway(config)
    assert restarted.ready["spool_backlog"] == left
    # The sender retries its whole job, as a PACS does after a dropped association.
    assert _send(restarted.dicom_port, files, dicom_env) == 40
    _wait_for_instances(40)
    deadline = time.monotonic() + 120
    while _spool_entries():  # duplicates of committed inputs drain too
        assert time.monotonic() < deadline
        time.sleep(0.2)
    _assert_store_matches_catalog(40)
    assert restarted.terminate()["failed"] == 0


def test_a_full_spool_falls_back_to_ingesting_in_the_association(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    files = write_ct_series(tmp_path / "study", 12)
    gateway = start_gateway(_received_config(max_files=4))
    os.kill(_drainer(gateway).pid, signal.SIGSTOP)
    try:
        assert _send(gateway.dicom_port, files, dicom_env) == 12
        assert len(_spool_entries()) == 4
        assert len(_instances()) == 8  # committed before their answers, as in committed mode
    finally:
        os.kill(_drainer(gateway).pid, signal.SIGCONT)
    _wait_for_instances(12)
    final = gateway.terminate()
    assert final["spooled"] == 4 and final["spool_full"] == 8 and final["stored"] == 12
    _assert_store_matches_catalog(12)
