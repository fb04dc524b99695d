"""Concurrent intake under group commit: several storescu associations into a real gateway.

- a SIGKILL while four associations are sending: every instance a sender heard succeed is in
  the catalog; at restart, recovery leaves the store and the catalog in agreement (no orphan
  object) before anything is resent; a resend of everything stores each instance once;
- a catalog refusal of some instances (a real SQLite trigger) fails exactly those, while the
  instances committed in the same batches succeed.
"""

from __future__ import annotations

import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select, text

from governance.catalog import Instance, open_catalog
from governance.keys import load_project_key
from governance.settings import get_settings
from imaging.deid import Deidentifier, load_profile
from tests.integration.conftest import gateway_config, write_ct_series

pytestmark = pytest.mark.integration

_SENDING = re.compile(r"Sending file: (\S+)")
_RESPONSE = "Received Store Response ("
_SUCCESS = "Received Store Response (Success)"


class Sender:
    """One storescu association; records which files it heard succeed or fail."""

    def __init__(self, port: int, files: list[Path], env: dict[str, str], *options: str) -> None:
        self.process = subprocess.Popen(
            ["storescu", "-v", *options, "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", str(port)]
            + [str(f) for f in files],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.succeeded: list[Path] = []
        self.failed: list[Path] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        current: Path | None = None
        while line := self.process.stderr.readline():
            if match := _SENDING.search(line):
                current = Path(match.group(1))
            elif _RESPONSE in line and current is not None:
                (self.succeeded if _SUCCESS in line else self.failed).append(current)
                current = None

    def wait(self) -> int:
        self._thread.join(300)
        return self.process.wait(300)


def _deidentified_uid(path: Path) -> str:
    """The SOP Instance UID the gateway gives this file (keyed, deterministic)."""
    deid = Deidentifier(load_profile(None), load_project_key())
    ds = dcmread(path)
    deid.deidentify(ds)
    return str(ds.SOPInstanceUID)


def _catalog_uids() -> list[str]:
    with open_catalog().session() as session:
        return list(session.scalars(select(Instance.sop_instance_uid)))


def _store_matches_catalog() -> None:
    with open_catalog().session() as session:
        recorded = set(session.scalars(select(Instance.sha256)))
    root = Path(get_settings().resolved_object_store)
    assert {p.stem for p in root.rglob("*.dcm")} == recorded
    assert list(root.rglob(".tmp-*")) == []


def test_sigkill_during_concurrent_associations(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    batches = [write_ct_series(tmp_path / f"s{n}", 30, patient_id=f"K{n}") for n in range(4)]
    config = gateway_config()  # stale_temp_age 0: no other writer in this home
    config["dicom"]["workers"] = 2
    gateway = start_gateway(config)
    senders = [Sender(gateway.dicom_port, files, dicom_env) for files in batches]
    while sum(len(s.succeeded) for s in senders) < 40 and any(s.process.poll() is None for s in senders):
        threading.Event().wait(0.02)
    gateway.kill()  # SIGKILL of the service; its workers die with it
    assert [s.wait() for s in senders] != [0, 0, 0, 0]
    heard = [path for s in senders for path in s.succeeded]
    assert len(heard) >= 40
    stored = set(_catalog_uids())
    assert {_deidentified_uid(path) for path in heard} <= stored  # every success is durable

    restarted = start_gateway(config)
    recovered = restarted.ready["recovered"]
    assert recovered["pending_windows"] == 0 and recovered["missing_objects"] == 0
    _store_matches_catalog()  # orphans of the killed run are gone before anything is resent

    resenders = [Sender(restarted.dicom_port, files, dicom_env) for files in batches]
    assert [s.wait() for s in resenders] == [0, 0, 0, 0]
    assert [len(s.succeeded) for s in resenders] == [30, 30, 30, 30]
    uids = _catalog_uids()
    assert len(uids) == len(set(uids)) == 120
    _store_matches_catalog()
    assert restarted.terminate()["failed"] == 0


def test_a_refused_record_fails_only_its_own_instances(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    batches = []
    for n in range(4):
        files = write_ct_series(tmp_path / f"s{n}", 20, patient_id=f"R{n}")
        for path in files[::5]:  # 4 of every 20 are labelled MR, which the catalog refuses
            ds = dcmread(path)
            ds.Modality = "MR"
            ds.save_as(path, enforce_file_format=True)
        batches.append(files)
    with open_catalog().engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TRIGGER refuse_mr BEFORE INSERT ON instances WHEN NEW.modality = 'MR' "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    gateway = start_gateway(gateway_config())
    # --no-halt: storescu otherwise stops its association at the first failure status.
    senders = [Sender(gateway.dicom_port, files, dicom_env, "--no-halt") for files in batches]
    for sender in senders:
        sender.wait()
    for sender, files in zip(senders, batches, strict=True):
        assert sorted(sender.failed) == sorted(files[::5])
        assert sorted(sender.succeeded) == sorted(set(files) - set(files[::5]))
    uids = _catalog_uids()
    assert len(uids) == len(set(uids)) == 64
    _store_matches_catalog()  # refused instances leave no object behind
    final = gateway.terminate()
    assert final["stored"] == 64 and final["failed"] == 16
