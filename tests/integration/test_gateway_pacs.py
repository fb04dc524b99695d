"""The gateway against real peers: Orthanc (PACS), dcmtk (storescu/echoscu), dicomweb-client.

Every test runs ``radgate gateway`` as a process, as a hospital would, and checks the catalog
and the content store of the test's RADGATE_HOME afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from governance.catalog import Instance, QuarantineRecord, open_catalog
from tests.dicom_factory import pydicom_file
from tests.integration.conftest import (
    MIXED_TRANSFER_SYNTAX_FILES,
    encode_ct_variants,
    gateway_config,
    write_ct_series,
)

pytestmark = pytest.mark.integration

RADGATE = str(Path(sys.executable).with_name("radgate"))


def _count(model: Any) -> int:
    with open_catalog().session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _instances() -> list[Instance]:
    with open_catalog().session() as session:
        return list(session.scalars(select(Instance)))


def _storescu(env: dict[str, str], port: int, files: list[str], *options: str, aet: str = "STORESCU"):  # type: ignore[no-untyped-def]
    return subprocess.run(
        ["storescu", *options, "-aet", aet, "-aec", "RADGATE", "127.0.0.1", str(port), *files],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _audit(action: str) -> list[Any]:
    from governance.audit import AuditLog

    return list(AuditLog().entries(action=action))


def _audit_ok() -> bool:
    from governance.audit import AuditLog

    return bool(AuditLog().verify().ok)


def _token(role: str) -> str:
    from governance.testing import cast_token

    return cast_token(role)


def test_echo_and_allow_list(start_gateway: Any, dicom_env: dict[str, str]) -> None:
    gateway = start_gateway(gateway_config())
    port = str(gateway.dicom_port)
    echo = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "RADGATE", "127.0.0.1", port],
        env=dicom_env,
        capture_output=True,
    )
    assert echo.returncode == 0

    ct = pydicom_file("CT_small.dcm")
    unknown = _storescu(dicom_env, gateway.dicom_port, [ct], aet="INTRUDER")
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stderr
    # Known AE title, wrong host: FARAWAY may only call from 10.9.8.0/24.
    wrong_host = _storescu(dicom_env, gateway.dicom_port, [ct], aet="FARAWAY")
    assert "Calling AE Title Not Recognized" in wrong_host.stderr
    wrong_called = subprocess.run(
        ["echoscu", "-aet", "STORESCU", "-aec", "NOTRADGATE", "127.0.0.1", port],
        env=dicom_env,
        capture_output=True,
    )
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr.decode()
    assert _count(Instance) == 0

    final = gateway.terminate()
    assert final["rejected_associations"] == 3  # the audit log names the two unknown callers
    assert final["stored"] == 0
    rejected = _audit("gateway.association-rejected")
    assert sorted(e.actor for e in rejected) == ["ae:FARAWAY", "ae:INTRUDER"]
    assert _audit_ok()


def _successes(result: subprocess.CompletedProcess[str]) -> int:
    return result.stderr.count("Received Store Response (Success)")


def test_storescu_mixed_transfer_syntaxes(
    start_gateway: Any, dicom_env: dict[str, str], tmp_path: Path
) -> None:
    """Real files in every common transfer syntax, each proposed in its own encoding."""
    from governance.catalog import LineageEvent
    from imaging.store import ContentStore

    gateway = start_gateway(gateway_config())
    # 1. A CT re-encoded by dcmtk/GDCM into each compressed syntax: all must be de-identified.
    variants = encode_ct_variants(tmp_path / "variants")
    sent_syntaxes, sent_uids = set(), set()
    for option, path in variants.items():
        ds = dcmread(path, stop_before_pixels=True)
        sent_syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        sent_uids.add(str(ds.SOPInstanceUID))
        result = _storescu(dicom_env, gateway.dicom_port, [str(path)], option, "-R", "-v")
        assert result.returncode == 0, (option, result.stderr[-500:])
        assert _successes(result) == 1
    assert len(sent_syntaxes) == len(variants)
    instances = _instances()
    assert len(instances) == len(variants)
    with open_catalog().session() as session:
        received = {e.details.get("transfer_syntax") for e in session.scalars(select(LineageEvent))}
    # The SCP accepted each file in its own encoding: nothing was transcoded on the way in.
    assert sent_syntaxes <= received | {i.transfer_syntax_uid for i in instances}
    store = ContentStore.from_settings()
    for instance in instances:  # de-identified: no original UID in the catalog or the store
        assert instance.sop_instance_uid not in sent_uids
        assert str(dcmread(BytesIO(store.get(instance.sha256))).SOPInstanceUID) not in sent_uids

    # 2. The pydicom corpus as shipped (CT, MR, RT, secondary captures in every syntax): each
    # file gets a success only if stored, otherwise a failure status and a quarantine record.
    total = successes = 0
    for option, names in MIXED_TRANSFER_SYNTAX_FILES.items():
        files = [pydicom_file(name) for name in names]
        result = _storescu(dicom_env, gateway.dicom_port, files, option, "-R", "-nh", "-v")
        assert "Association Accepted" in result.stderr, option
        total += len(files)
        successes += _successes(result)
    assert successes >= 5  # CT, RT plan, big-endian MR, JPEG-LS MR, JPEG 2000 MR
    assert _count(Instance) == len(variants) + successes
    assert _count(QuarantineRecord) == total - successes
    final = gateway.terminate()
    assert final["stored"] == len(variants) + successes
    assert final["failed"] == final["quarantined"] == total - successes


def test_orthanc_pushes_study_to_gateway(start_gateway: Any, clean_orthanc: Any, tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "study", 5)
    for path in files:
        clean_orthanc.upload(path.read_bytes())
    gateway = start_gateway(gateway_config(clean_orthanc))
    clean_orthanc.add_modality("radgate", "RADGATE", "127.0.0.1", gateway.dicom_port)
    (study,) = clean_orthanc.rest("GET", "/studies")
    # Orthanc acts as the PACS routing the study (C-STORE SCU); synchronous by default.
    result = clean_orthanc.rest(
        "POST", "/modalities/radgate/store", {"Resources": [study], "Synchronous": True}
    )
    assert result["FailedInstancesCount"] == 0
    assert result["InstancesCount"] == 5
    instances = _instances()
    assert len(instances) == 5
    assert len({i.study_instance_uid for i in instances}) == 1
    assert gateway.terminate()["stored"] == 5
    (entry,) = _audit("gateway.c-store")
    assert entry.actor == "ae:ORTHANC"
    assert entry.details == {"stored": 5, "failed": 0, "end": "released"}
    assert _audit_ok()


def test_stow_rs_from_dicomweb_client(start_gateway: Any, tmp_path: Path) -> None:
    from dicomweb_client import DICOMwebClient

    gateway = start_gateway(gateway_config())
    token = _token("pacs-client")
    datasets = [dcmread(p) for p in write_ct_series(tmp_path / "stow", 3)]
    client = DICOMwebClient(url=gateway.stow_url, headers={"Authorization": f"Bearer {token}"})
    response = client.store_instances(datasets)
    referenced = response.ReferencedSOPSequence
    assert len(referenced) == 3
    assert {str(item.ReferencedSOPInstanceUID) for item in referenced} == {
        str(ds.SOPInstanceUID) for ds in datasets
    }
    assert "FailedSOPSequence" not in response
    assert _count(Instance) == 3
    (entry,) = _audit("gateway.stow-rs")
    from governance.auth import authenticate

    assert entry.actor == authenticate(token).name and entry.details["stored"] == 3
    # Study-scoped STOW: an instance of another study fails with 0xA900, nothing stored.
    other = dcmread(write_ct_series(tmp_path / "other", 1)[0])
    from imaging.gateway.multipart import build_related

    buffer = BytesIO()
    other.save_as(buffer, enforce_file_format=True)
    body, content_type = build_related([buffer.getvalue()])
    reply = httpx.post(
        f"{gateway.stow_url}/studies/{datasets[0].StudyInstanceUID}",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 409
    assert reply.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    assert _count(Instance) == 3


def test_stow_rs_rejects_bad_tokens(start_gateway: Any, tmp_path: Path) -> None:
    gateway = start_gateway(gateway_config())
    engineer = _token("ml-engineer")
    body, content_type = __import__("imaging.gateway.multipart", fromlist=["x"]).build_related(
        [write_ct_series(tmp_path / "s", 1)[0].read_bytes()]
    )
    url = f"{gateway.stow_url}/studies"
    for headers, expected in (
        ({}, 401),
        ({"Authorization": "Bearer rg_not-a-real-token"}, 401),
        ({"Authorization": "Basic cmFkZ2F0ZTpyYWRnYXRl"}, 401),
        ({"Authorization": f"Bearer {engineer}"}, 403),
    ):
        reply = httpx.post(url, content=body, headers={"Content-Type": content_type, **headers})
        assert reply.status_code == expected
        assert "rg_not-a-real-token" not in reply.text
    assert httpx.get(f"http://127.0.0.1:{gateway.http_port}/docs").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{gateway.http_port}/openapi.json").status_code == 404
    assert _count(Instance) == 0


def test_corrupt_and_non_dicom_payloads_fail_and_quarantine(
    start_gateway: Any, tmp_path: Path, dicom_env: dict[str, str]
) -> None:
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from imaging.gateway.multipart import build_related

    gateway = start_gateway(gateway_config())
    token = _token("pacs-client")
    good = write_ct_series(tmp_path / "good", 1)[0].read_bytes()
    truncated = good[: len(good) // 3]
    body, content_type = build_related([good, b"this is not DICOM at all", truncated])
    reply = httpx.post(
        f"{gateway.stow_url}/studies",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
    )
    assert reply.status_code == 202
    payload = reply.json()
    assert len(payload["00081199"]["Value"]) == 1
    failures = payload["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failures] == [[0xC000], [0xC000]]
    assert reply.headers["content-type"].startswith("application/dicom+json")
    assert "Doe" not in reply.text

    # Wrong media type and malformed multipart answer 415 / 400.
    wrong = httpx.post(
        f"{gateway.stow_url}/studies",
        content=b"x",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert wrong.status_code == 415
    broken = httpx.post(
        f"{gateway.stow_url}/studies",
        content=b"--b\r\nno close",
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            "Authorization": f"Bearer {token}",
        },
    )
    assert broken.status_code == 400

    # Over DIMSE: valid file meta, garbage dataset, sent raw (pynetdicom does not decode it).
    corrupt = tmp_path / "corrupt.dcm"
    meta_end = good.index(b"\x08\x00", 132 + 12)  # first group-0008 element after the meta
    corrupt.write_bytes(good[:meta_end] + b"\x08\x00\x16\x00UI\x40\x00" + b"\xff" * 40)
    ae = AE(ae_title="RGTEST")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", gateway.dicom_port, ae_title="RADGATE")
        assert assoc.is_established
        status = assoc.send_c_store(corrupt)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    assert status.Status == 0xC000
    assert "quarantined" in str(status.get("ErrorComment", ""))

    assert _count(Instance) == 1
    assert _count(QuarantineRecord) == 3
    final = gateway.terminate()
    assert final["quarantined"] == 1  # the DIMSE one (STOW is counted in its response)


def test_pull_study_from_orthanc_qido_wado(
    clean_orthanc: Any, orthanc_credentials_env: dict[str, str], tmp_path: Path, as_role: Any
) -> None:
    import yaml

    as_role("data-steward")  # the subprocesses inherit RADGATE_TOKEN

    wanted = write_ct_series(tmp_path / "wanted", 4, patient_id="PULL-1")
    other = write_ct_series(tmp_path / "other", 2, patient_id="OTHER-2")
    for path in wanted + other:
        clean_orthanc.upload(path.read_bytes())
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(clean_orthanc)))
    study_uid = str(dcmread(wanted[0]).StudyInstanceUID)

    def pull(*args: str) -> dict[str, Any]:
        result = subprocess.run(
            [RADGATE, "pull", "--pacs", "orthanc", "--config", str(config), "--json", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-800:]
        assert clean_orthanc.password not in result.stdout + result.stderr
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    first = pull("--study", study_uid)
    assert first == {"studies": 1, "instances": 4, "skipped": 0, "ingested": 4, "quarantined": 0, "errors": 0}
    assert _count(Instance) == 4
    again = pull("--study", study_uid)  # resumable: nothing fetched twice
    assert again["skipped"] == 4 and again["ingested"] == 0
    by_query = pull("--query", "PatientID=OTH*")  # wildcard QIDO
    assert by_query["studies"] == 1 and by_query["ingested"] == 2
    assert _count(Instance) == 6


def test_push_back_into_orthanc(
    clean_orthanc: Any, orthanc_credentials_env: dict[str, str], tmp_path: Path, as_role: Any
) -> None:
    import yaml

    as_role("data-steward")  # the subprocesses inherit RADGATE_TOKEN

    files = write_ct_series(tmp_path / "results", 3)
    files.append(Path(pydicom_file("MR_small_jp2klossless.dcm")))  # compressed, as-is
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(clean_orthanc)))
    result = subprocess.run(
        [
            RADGATE,
            "push",
            "--pacs",
            "orthanc",
            "--config",
            str(config),
            "--json",
            str(tmp_path / "results"),
            str(files[-1]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-800:]
    assert json.loads(result.stdout) == {"sent": 4, "failed": 0, "skipped": 0}
    assert len(clean_orthanc.rest("GET", "/instances")) == 4
    # As the hospital sees it: dcmtk's findscu finds the pushed series on the PACS.
    study_uid = str(dcmread(files[0]).StudyInstanceUID)
    found = subprocess.run(
        [
            "findscu",
            "-S",
            "-aet",
            "FINDSCU",
            "-aec",
            clean_orthanc.aet,
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "-k",
            "SeriesInstanceUID",
            "-k",
            "NumberOfSeriesRelatedInstances",
            "127.0.0.1",
            str(clean_orthanc.dicom_port),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr[-500:]
    assert re.search(r"IS \[3 ?\]\s+#.*NumberOfSeriesRelatedInstances", found.stderr)

    # A PACS that does not know our AE title refuses: a clear error, exit 1, no traceback.
    refused = subprocess.run(
        [
            RADGATE,
            "push",
            "--pacs",
            "orthanc",
            "--config",
            str(config),
            "--calling-ae",
            "STRANGER",
            str(files[0]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "refused the association" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_pull_study_from_orthanc_cfind_cget(clean_orthanc: Any, tmp_path: Path, as_role: Any) -> None:
    """A PACS without DICOMweb: C-FIND to list, C-GET to fetch, same ledger (resumable)."""
    import yaml

    as_role("data-steward")

    wanted = write_ct_series(tmp_path / "wanted", 3, patient_id="DIMSE-1")
    other = write_ct_series(tmp_path / "other", 2, patient_id="ELSE-2")
    for path in wanted + other:
        clean_orthanc.upload(path.read_bytes())
    config = gateway_config(clean_orthanc)
    del config["pacs"][0]["dicomweb_url"]  # auto -> DIMSE
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))

    def pull(*args: str) -> dict[str, Any]:
        result = subprocess.run(
            [RADGATE, "pull", "--pacs", "orthanc", "--config", str(config_path), "--json", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-800:]
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    first = pull("--query", "PatientID=DIMSE-1")
    assert first == {"studies": 1, "instances": 3, "skipped": 0, "ingested": 3, "quarantined": 0, "errors": 0}
    assert _count(Instance) == 3
    study_uid = str(dcmread(wanted[0]).StudyInstanceUID)
    again = pull("--study", study_uid, "--method", "dimse")
    assert again["skipped"] == 3 and again["ingested"] == 0
    assert _count(Instance) == 3


def test_pull_study_by_cmove_into_the_running_gateway(
    start_gateway: Any, clean_orthanc: Any, tmp_path: Path
) -> None:
    """A PACS without C-GET: C-MOVE to our AE title; the running gateway receives, ingests and
    acknowledges, and the PACS reports completion only after that."""
    import yaml

    files = write_ct_series(tmp_path / "study", 3, patient_id="MOVE-1")
    for path in files:
        clean_orthanc.upload(path.read_bytes())
    config = gateway_config(clean_orthanc)
    gateway = start_gateway(config)
    clean_orthanc.add_modality("radgate", "RADGATE", "127.0.0.1", gateway.dicom_port)
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    study_uid = str(dcmread(files[0]).StudyInstanceUID)

    def pull() -> dict[str, Any]:
        result = subprocess.run(
            [
                RADGATE,
                "pull",
                "--pacs",
                "orthanc",
                "--config",
                str(config_path),
                "--json",
                "--method",
                "cmove",
                "--study",
                study_uid,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-800:]
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    assert pull()["ingested"] == 3
    assert _count(Instance) == 3
    again = pull()
    assert again["skipped"] == 3 and again["ingested"] == 0
    assert gateway.terminate()["stored"] == 3
