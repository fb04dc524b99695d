"""FHIR R4 results for the EMR, against a real FHIR server on 127.0.0.1 (Medplum's FHIR router and
R4 StructureDefinition validator, scripts/ci/fhir-server) and the HL7 FHIR R4 JSON schema: a served
result becomes a preliminary DiagnosticReport with its Observation, ImagingStudy and Device, a
review makes it final; a server that is down loses nothing; a refused bundle is kept; nothing
PHI-bearing leaves under the default profile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread

from tests.integration.conftest import load_script
from tests.unit import test_serving_api as serving_api

# The serving API world of the unit tests (real registry, gate and worker; module-scoped here too).
MODEL, _auth = serving_api.MODEL, serving_api._auth
radgate_home, world = serving_api.radgate_home, serving_api.world

fhir_ci = load_script("scripts/ci/fhir_server.py", "radgate_ci_fhir_server")

pytestmark = pytest.mark.skipif(not fhir_ci.available(), reason="scripts/ci/install-fhir-server.sh not run")


@lru_cache(maxsize=1)
def _r4_schema_validator() -> Any:
    import jsonschema

    schema = json.loads(fhir_ci.schema_path().read_text())
    return jsonschema.Draft6Validator(schema)


def _schema_errors(resource: dict[str, Any]) -> list[str]:
    return [f"{list(e.path)}: {e.message[:200]}" for e in _r4_schema_validator().iter_errors(resource)]


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = fhir_ci.FhirTestServer(tmp_path_factory.mktemp("fhir")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fhir_world(
    world: dict[str, Any], fhir_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    from serving.interop import FhirConfig, start_interop

    config = FhirConfig(url=fhir_server.url, outbox=tmp_path_factory.mktemp("outbox"))
    service = world["service"]
    service.config = service.config.model_copy(update={"fhir": config})
    service.interop = start_interop(config, None)  # gauges; delivery is driven by the test
    return {**world, "fhir": config}


def _search(server: Any, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}/{query}", headers={"Authorization": f"Bearer {server.token}"}, timeout=10
    )
    answer.raise_for_status()
    return [e["resource"] for e in answer.json().get("entry", [])]


def _predict(world: dict[str, Any], index: int = 0) -> dict[str, Any]:
    reply = world["client"].post(
        f"/v1/models/{MODEL}/predict",
        content=world["files"][index].read_bytes(),
        headers={**_auth(world), "Content-Type": "application/dicom"},
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_result_becomes_a_valid_report_then_final(fhir_world: dict[str, Any], fhir_server: Any) -> None:
    from fhir.resources.R4B.bundle import Bundle

    from serving.interop import record_review
    from serving.interop.emr import FhirSender, outbox_for

    body = _predict(fhir_world)
    (result,) = body["results"]
    outbox = outbox_for(fhir_world["fhir"])
    (pending,) = outbox.pending()
    raw = json.loads(pending.read_bytes())
    Bundle.model_validate(raw)  # the fhir.resources models
    assert _schema_errors(raw) == []  # the HL7 FHIR R4 JSON schema
    for entry in raw["entry"]:
        assert _schema_errors(entry["resource"]) == []
    # Default profile: no patient identifier, no original UID in anything that leaves.
    source = dcmread(fhir_world["files"][0])
    text = pending.read_text()
    assert str(source.PatientID) not in text and str(source.StudyInstanceUID) not in text
    assert str(source.PatientName).split("^")[0] not in text

    sender = FhirSender(fhir_world["fhir"], token=fhir_server.token)
    report = sender.deliver()
    assert (report.sent, report.refused, report.backlog, report.error) == (1, 0, 0, None)
    (stored,) = _search(fhir_server, f"DiagnosticReport?identifier=urn:radgate:result|{result['request_id']}")
    assert stored["status"] == "preliminary"
    (observation,) = _search(
        fhir_server, f"Observation?identifier=urn:radgate:observation|{result['request_id']}:opacity"
    )
    assert observation["valueQuantity"]["value"] == pytest.approx(result["probability"], abs=1e-6)
    assert observation["interpretation"][0]["coding"][0]["code"] == (
        "POS" if result["decision"]["positive"] else "NEG"
    )
    assert stored["result"][0]["reference"] == f"Observation/{observation['id']}"
    (device,) = _search(fhir_server, f"Device?identifier=urn:radgate:model|{MODEL}/{fhir_world['version']}")
    assert {i["value"] for i in device["identifier"]} >= {body["approval"]["artifact_sha256"]}
    assert device["property"][0]["valueCode"][0]["coding"][0]["code"] == body["approval"]["status"]
    (study,) = _search(fhir_server, "ImagingStudy")
    assert stored["imagingStudy"][0]["reference"] == f"ImagingStudy/{study['id']}"

    # The reviewer overrides the AI: the same report (conditional update) becomes final.
    assert record_review(result["request_id"], False, "no_finding") is not None
    assert sender.deliver().sent == 1
    (final,) = _search(fhir_server, f"DiagnosticReport?identifier=urn:radgate:result|{result['request_id']}")
    assert final["id"] == stored["id"] and final["status"] == "final"
    assert "Overridden by a clinical reviewer: no_finding" in final["conclusion"]
    assert len(_search(fhir_server, "Device")) == 1  # resent, not duplicated


def test_server_down_keeps_results_and_refused_bundles_are_kept(
    fhir_world: dict[str, Any], fhir_server: Any, tmp_path: Path
) -> None:
    from serving.interop import FhirConfig
    from serving.interop.emr import FhirSender, outbox_for

    _predict(fhir_world, 1)
    config = fhir_world["fhir"]
    outbox = outbox_for(config)
    dead = FhirConfig(url="http://127.0.0.1:9", outbox=config.outbox, timeout_s=2)
    down = FhirSender(dead, token=fhir_server.token).deliver()
    assert down.sent == 0 and down.backlog == 1 and down.error is not None
    metrics = fhir_world["client"].get("/metrics", headers=_auth(fhir_world, "eng")).text
    assert 'radgate_interop_backlog{queue="fhir"} 1.0' in metrics
    wrong_token = FhirSender(config, token="wrong").deliver()  # 401: kept for a retry, not refused
    assert (wrong_token.sent, wrong_token.refused, wrong_token.backlog) == (0, 0, 1)
    assert wrong_token.error == "HTTP 401"
    _predict(fhir_world, 0)
    outbox.put(
        "broken",
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {
                            "resourceType": "Observation",
                            "status": "final",
                            "code": {"text": "x"},
                            "valueQuantity": {"value": "high"},
                        },
                        "request": {"method": "POST", "url": "Observation"},
                    }
                ],
            }
        ).encode(),
    )
    up = FhirSender(config, token=fhir_server.token).deliver()
    assert (up.sent, up.refused, up.backlog) == (2, 1, 0)
    answers = list(outbox.refused_dir.glob("*.answer"))
    assert any(b"Invalid JSON type" in a.read_bytes() for a in answers)  # the validator's reason, kept


def test_original_identifiers_only_when_configured(fhir_world: dict[str, Any], tmp_path: Path) -> None:
    from serving.interop import FhirConfig, IdentifierProfile, record_results

    source = dcmread(fhir_world["files"][0])
    body = _predict(fhir_world)
    config = FhirConfig(outbox=tmp_path, identifiers=IdentifierProfile.ORIGINAL)
    (path,) = record_results(config, body, [fhir_world["files"][0].read_bytes()])
    text = path.read_text()
    assert str(source.StudyInstanceUID) in text and str(source.PatientID) in text
    assert str(source.PatientName).split("^")[0] not in text  # never a name


def test_reviewer_feedback_makes_the_report_final(fhir_world: dict[str, Any], fhir_server: Any) -> None:
    from serving.interop.emr import FhirSender
    from tests.ui.conftest import record_served_request

    body = _predict(fhir_world, 1)
    (result,) = body["results"]
    record_served_request(result["request_id"], model=MODEL)  # what live monitoring records per request
    sender = FhirSender(fhir_world["fhir"], token=fhir_server.token)
    assert sender.deliver().error is None
    query = f"DiagnosticReport?identifier=urn:radgate:result|{result['request_id']}"
    assert [r["status"] for r in _search(fhir_server, query)] == ["preliminary"]
    reply = fhir_world["client"].post(
        "/v1/feedback",
        json={"request_id": result["request_id"], "agree": True},
        headers=_auth(fhir_world, "doc"),
    )
    assert reply.status_code == 201, reply.text
    assert sender.deliver().sent == 1
    (final,) = _search(fhir_server, query)
    assert final["status"] == "final" and "Confirmed by a clinical reviewer" in final["conclusion"]


def test_bundles_go_over_verified_tls(fhir_world: dict[str, Any], tmp_path: Path) -> None:
    from serving.interop import FhirConfig
    from serving.interop.emr import FhirSender, outbox_for
    from tests.integration import test_atna_rsyslog

    certs = test_atna_rsyslog.make_certificates(tmp_path / "certs")
    server = fhir_ci.FhirTestServer(
        tmp_path / "tls-server",
        certificate=certs.server_certificate,
        private_key=certs.server_key,
        ca_file=certs.ca_certificate,
    ).start()
    try:
        outbox = tmp_path / "tls-outbox"
        _predict(fhir_world)  # queued in the module's outbox; this test sends its own copy
        (queued,) = outbox_for(fhir_world["fhir"]).pending()[-1:]
        trusted = FhirConfig(url=server.url, outbox=outbox, ca_file=certs.ca_certificate)
        outbox_for(trusted).put("tls", queued.read_bytes())
        untrusted = FhirSender(FhirConfig(url=server.url, outbox=outbox), token=server.token).deliver()
        assert untrusted.sent == 0 and untrusted.backlog == 1 and untrusted.error  # unknown CA: kept
        delivered = FhirSender(trusted, token=server.token).deliver()
        assert (delivered.sent, delivered.backlog, delivered.error) == (1, 0, None)
    finally:
        server.stop()
        for path in outbox_for(fhir_world["fhir"]).pending():
            path.unlink()
