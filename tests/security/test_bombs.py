"""Compression bombs through each entry point, under a memory ceiling: a Deflated Explicit VR
Little Endian file of about 4 MiB (real CT header, 128 x 128 declared) whose pixel data inflates
to 4 GiB (DEFLATE's ratio tops out near 1032:1, so 4 GiB cannot come from fewer bytes).

- C-STORE to a real ``radgate gateway`` (pynetdicom sends the file as it is, chunked);
- STOW-RS to the same gateway;
- ``POST /v1/models/{name}/predict`` of the serving API.

Each is refused (quarantined ``decompression_limit``, or a 413 naming it) and the process's
peak RSS stays within a margin of where it was. So that a regression cannot take 8 GiB from a
shared machine, the address space of the process under attack is capped (RLIMIT_AS) a few GiB
above its size for the duration: unbounded inflation then fails with MemoryError instead, which
the assertions on the reason still catch.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from governance.catalog import QuarantineRecord, open_catalog
from tests.integration.conftest import gateway_config
from tests.security.bombs import deflate_bomb
from tests.security.test_intake_dos import _status, store_file

pytestmark = pytest.mark.integration

MEMORY_MARGIN = 256 * 1024**2  # peak RSS may rise this much while a bomb is refused
ADDRESS_SPACE_HEADROOM = 3 * 1024**3


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bombs") / "bomb-4gib.dcm"
    path.write_bytes(deflate_bomb())
    return path


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


@contextlib.contextmanager
def _address_space_capped(pid: int) -> Iterator[None]:
    """RLIMIT_AS of ``pid`` lowered to its current size plus headroom, restored after."""
    old = resource.prlimit(pid, resource.RLIMIT_AS)
    cap = _vm_size(pid) + ADDRESS_SPACE_HEADROOM
    resource.prlimit(pid, resource.RLIMIT_AS, (cap, old[1]))
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_AS, old)


def _reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _quarantine_reasons() -> list[str]:
    with open_catalog().session() as session:
        return list(session.scalars(select(QuarantineRecord.reason)))


def test_bomb_by_c_store_is_quarantined_within_memory(start_gateway: Any, bomb_file: Path) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    gateway = start_gateway(gateway_config(http={"enabled": False}))
    pid = gateway.process.pid
    before = _status(pid)
    _reset_peak(pid)
    with _address_space_capped(pid):
        status = store_file(gateway.dicom_port, bomb_file, CTImageStorage, DeflatedExplicitVRLittleEndian)
    after = _status(pid)
    assert int(status.Status) == 0xC000  # cannot understand: quarantined
    assert _quarantine_reasons() == ["decompression_limit"]
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN, (before, after)


def test_bomb_by_stow_rs_is_refused_within_memory(start_gateway: Any, bomb_file: Path) -> None:
    from governance.testing import cast_token
    from imaging.gateway.multipart import build_related

    gateway = start_gateway(gateway_config())
    pid = gateway.process.pid
    body, content_type = build_related([bomb_file.read_bytes()])
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {cast_token('pacs-client')}"}
    before = _status(pid)
    _reset_peak(pid)
    with _address_space_capped(pid):
        reply = httpx.post(f"{gateway.stow_url}/studies", content=body, headers=headers, timeout=120)
    after = _status(pid)
    assert reply.status_code == 409  # none stored
    (failure,) = reply.json()["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0xC000]
    assert _quarantine_reasons() == ["decompression_limit"]
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN, (before, after)


def test_bomb_by_predict_is_refused_within_memory(bomb_file: Path) -> None:
    """The serving ingress parses and bounds the body before it asks the gate or a model:
    no model needs to be approved for the bomb to reach the parser (none is called)."""
    from fastapi.testclient import TestClient

    from governance.testing import cast_token
    from serving.api import IngressService, api, install_service
    from serving.config import ServeConfig

    config = ServeConfig.model_validate({"max_body_bytes": 8 * 1024 * 1024, "models": [{"name": "chest"}]})
    install_service(IngressService(config, {}))
    client = TestClient(api)
    headers = {"Content-Type": "application/dicom", "Authorization": f"Bearer {cast_token('pacs-client')}"}
    data = bomb_file.read_bytes()
    pid = Path("/proc/self").resolve().name
    before = _status(int(pid))
    _reset_peak(int(pid))
    with _address_space_capped(int(pid)):
        reply = client.post("/v1/models/chest/predict", content=data, headers=headers)
    after = _status(int(pid))
    assert reply.status_code == 413, reply.text
    assert "decompression_limit" in reply.text
    assert after["VmHWM"] - before["VmRSS"] < MEMORY_MARGIN, (before, after)
