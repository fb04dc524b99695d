"""Gateway building blocks without a network: configuration, multipart, statuses, STOW-RS app
(FastAPI in-process with the real ingest path and real tokens)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pydicom import dcmread

from imaging.gateway import AllowedPeer, ConfigError, DicomListener, GatewayConfig, StoreStatus, load_config
from imaging.gateway.multipart import MultipartError, build_related, content_type_params, iter_parts
from imaging.gateway.status import verdict_for_error
from tests.dicom_factory import pydicom_file

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "configs/gateway/gateway.yaml")
    assert config.dicom.ae_title == "RADGATE"
    assert config.dicom.port == 11112
    assert config.http.host == "127.0.0.1"
    assert config.peer("orthanc").dicomweb_url


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dicom": {"ae_title": "A" * 17}}))
    with pytest.raises(ConfigError, match="invalid"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"dicom": {"allowed_peers": [{"ae_title": "X", "hosts": ["not-an-ip"]}]}}))
    with pytest.raises(ConfigError):
        load_config(bad)
    with pytest.raises(ConfigError, match="no PACS named"):
        GatewayConfig().peer("nowhere")


def test_allow_list_by_ae_title_and_network() -> None:
    listener = DicomListener(
        allowed_peers=(
            AllowedPeer(ae_title="CT01", hosts=("10.1.0.0/16",)),
            AllowedPeer(ae_title="ANYWHERE"),
        )
    )
    assert listener.permits("CT01", "10.1.2.3")
    assert listener.permits("CT01  ", "10.1.2.3")  # AE titles are space padded on the wire
    assert not listener.permits("CT01", "10.2.0.1")
    assert not listener.permits("CT02", "10.1.2.3")
    assert listener.permits("ANYWHERE", "192.0.2.1")
    assert not DicomListener().permits("ANYONE", "127.0.0.1")  # empty list: nobody
    assert DicomListener(allow_any=True).permits("ANYONE", "127.0.0.1")


def test_pacs_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from imaging.gateway import PacsPeer

    peer = PacsPeer(name="p", ae_title="P", username_env="RG_T_USER", password_env="RG_T_PASS")
    with pytest.raises(ConfigError, match="RG_T_USER"):
        peer.credentials()
    monkeypatch.setenv("RG_T_USER", "u")
    monkeypatch.setenv("RG_T_PASS", "p")
    assert peer.credentials() == ("u", "p")


def test_multipart_round_trip_and_errors() -> None:
    body, content_type = build_related([b"first", b"\r\n--tricky\r\n", b""], boundary="B0undary")
    media, params = content_type_params(content_type)
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "B0undary"}
    parts = list(iter_parts(body, params["boundary"]))
    assert [p.body for p in parts] == [b"first", b"\r\n--tricky\r\n", b""]
    assert all(p.content_type == "application/dicom" for p in parts)
    with pytest.raises(MultipartError):
        list(iter_parts(b"--B0undary\r\nContent-Type: x\r\n\r\nno end", "B0undary"))
    with pytest.raises(MultipartError):
        list(iter_parts(body, ""))
    assert (
        content_type_params('multipart/related; boundary="a;b"; type=application/dicom')[1]["boundary"]
        == "a;b"
    )


def test_errors_map_to_failure_statuses() -> None:
    import errno

    assert verdict_for_error(OSError(errno.ENOSPC, "full")).status is StoreStatus.OUT_OF_RESOURCES
    verdict = verdict_for_error(RuntimeError("patient Doe^John"))
    assert verdict.status is StoreStatus.PROCESSING_FAILURE
    assert "Doe" not in verdict.comment


@pytest.fixture
def stow_client() -> TestClient:
    from imaging.gateway.stow import create_stow_app
    from imaging.ingest import Ingestor

    return TestClient(create_stow_app(Ingestor()))


def _token(role: str) -> str:
    from governance.auth import add_user, authenticate

    admin = add_user("admin", "admin", by=None)
    return add_user("client", role, by=authenticate(admin.token)).token


def test_stow_rs_stores_and_answers_the_standard_response(stow_client: TestClient) -> None:
    token = _token("pacs-client")
    ct = Path(pydicom_file("CT_small.dcm")).read_bytes()
    body, content_type = build_related([ct, b"not dicom"])
    reply = stow_client.post(
        "/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 202
    payload = reply.json()
    (stored,) = payload["00081199"]["Value"]
    original = dcmread(BytesIO(ct))
    assert stored["00081155"]["Value"] == [original.SOPInstanceUID]
    assert stored["00081150"]["Value"] == [original.SOPClassUID]
    (failed,) = payload["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [int(StoreStatus.CANNOT_UNDERSTAND)]
    # Sending it again is a success too (already stored), and adds no second record.
    body, content_type = build_related([ct])
    again = stow_client.post(
        "/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
    )
    assert again.status_code == 200
    from sqlalchemy import func, select

    from governance.catalog import Instance, open_catalog

    with open_catalog().session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1


def test_stow_rs_authenticates_every_request(stow_client: TestClient) -> None:
    body, content_type = build_related([b"x"])
    assert (
        stow_client.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
        ).status_code
        == 401
    )
    engineer = _token("ml-engineer")
    reply = stow_client.post(
        "/dicomweb/studies/1.2.3",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {engineer}"},
    )
    assert reply.status_code == 403
    assert stow_client.get("/openapi.json").status_code == 404


def test_untrusted_bodies_never_escape_as_other_errors() -> None:
    """Whatever a client sends, parsing fails only with MultipartError and identification
    returns None: never a 500."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from imaging.gateway.stow import _identify

    ct = Path(pydicom_file("CT_small.dcm")).read_bytes()

    @settings(max_examples=150, deadline=None)
    @given(st.binary(max_size=512), st.integers(0, len(ct)), st.binary(max_size=64))
    def check(noise: bytes, cut: int, patch: bytes) -> None:
        mutated = ct[:cut] + patch + ct[cut + len(patch) :]
        for data in (noise, mutated, ct[:cut]):
            _identify(data)
            try:
                list(iter_parts(data, "B0undary"))
                list(iter_parts(b"--B0undary\r\n" + data, "B0undary"))
            except MultipartError:
                pass

    check()


def test_startup_sweep_removes_only_stale_temp_files(radgate_home: Path) -> None:
    import os
    import time

    from governance.settings import get_settings
    from imaging.gateway.recovery import sweep_stale_temp_files

    settings = get_settings()
    shard = Path(settings.resolved_object_store) / "ab" / "cd"
    shard.mkdir(parents=True)
    stale, fresh, stored = shard / ".tmp-stale", shard / ".tmp-fresh", shard / ("ab" * 32 + ".dcm")
    for path in (stale, fresh, stored):
        path.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert sweep_stale_temp_files(600) == 1
    assert not stale.exists() and fresh.exists() and stored.exists()
    assert sweep_stale_temp_files(0) == 1  # after a crash with no other writer
    assert stored.exists()
