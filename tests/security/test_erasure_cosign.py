"""Erasure co-signature: the honest broker no longer runs ``erase`` with an admin's raw token.
The broker requests, an admin confirms signed in as themself, the broker executes; a request
cannot be executed unconfirmed, confirmed by the requester, reused, or for another patient."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from governance.audit import AuditLog
from governance.testing import create_cast
from tests.integration.test_compliance_support import ingest_demo


def _radgate(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radgate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RADGATE_TOKEN": token},
    )


def test_request_confirm_execute(radgate_home: Path) -> None:
    ingested = ingest_demo(radgate_home, patients=3, images=1, size=32)
    target, other = ingested.demo.studies[0].patient_id, ingested.demo.studies[1].patient_id
    cast = create_cast()
    broker, admin = cast.tokens["broker"], cast.tokens["admin"]

    assert "--admin-token" not in _radgate("erase", "--help", token=broker).stdout
    unconfirmed = _radgate(
        "erase", "--patient", target, "--reason", "req 7", "--confirmation", "0" * 16, token=broker
    )
    assert unconfirmed.returncode != 0 and "no erasure request" in unconfirmed.stderr

    asked = _radgate("erase", "--patient", target, "--reason", "req 7", "--request", token=broker)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    request_id = asked.stdout.split("erasure request ")[1].split(":")[0]
    early = _radgate(
        "erase", "--patient", target, "--reason", "req 7", "--confirmation", request_id, token=broker
    )
    assert early.returncode != 0 and "not confirmed" in early.stderr
    assert _radgate("erase-confirm", request_id, token=broker).returncode == 4  # not an admin
    assert _radgate("erase-confirm", request_id, token=admin).returncode == 0

    wrong = _radgate(
        "erase", "--patient", other, "--reason", "req 7", "--confirmation", request_id, token=broker
    )
    assert wrong.returncode != 0 and "another patient" in wrong.stderr
    done = _radgate(
        "erase", "--patient", target, "--reason", "req 7", "--confirmation", request_id, token=broker
    )
    assert done.returncode == 0, done.stdout + done.stderr
    again = _radgate(
        "erase", "--patient", target, "--reason", "req 7", "--confirmation", request_id, token=broker
    )
    assert again.returncode != 0 and "used already" in again.stderr
    start = AuditLog().entries(action="erasure.start")[-1]
    assert start.details["approved_by"] == "admin" and start.details["request_id"] == request_id
    assert target not in "".join(e.to_json() for e in AuditLog().entries())
