"""The audit chain exported as FHIR AuditEvents (IHE BALP pattern) to a real FHIR server on
127.0.0.1 (Medplum's router + R4 validator, scripts/ci/fhir-server), valid against the HL7 R4
JSON schema; resent entries update, never duplicate; a server that is down loses nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import load_script

fhir_ci = load_script("scripts/ci/fhir_server.py", "radgate_ci_fhir_server")

pytestmark = pytest.mark.skipif(not fhir_ci.available(), reason="scripts/ci/install-fhir-server.sh not run")


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = fhir_ci.FhirTestServer(tmp_path_factory.mktemp("fhir-audit")).start()
    yield server
    server.stop()


def _events(server: Any) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}/AuditEvent?_count=100", headers={"Authorization": f"Bearer {server.token}"}, timeout=10
    )
    answer.raise_for_status()
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_chain_entries_become_audit_events(fhir_server: Any) -> None:
    import jsonschema

    from governance.audit import record
    from governance.audit.atna import ExportCursor, fhir_audit_exporter
    from governance.audit.atna.fhir_audit import audit_event

    record("alice", "ui.login", "user:alice", {"status": 200}, role="clinical-reviewer")
    record("alice", "serve.predict", "model:chest-opacity/3", {"n": 1}, role="clinical-reviewer")
    record("bob", "model.promote", "model:chest-opacity/3", {"alias": "production"}, role="ml-engineer")
    record("anonymous", "serve.auth.denied", "route:/v1/models", {"status": 401})
    down = fhir_audit_exporter("http://127.0.0.1:9", token=fhir_server.token)
    assert down.pump().backlog == 4  # nothing sent, nothing lost
    exporter = fhir_audit_exporter(fhir_server.url, token=fhir_server.token)
    exporter.cursor = ExportCursor(down.cursor.path)  # the same queue position
    report = exporter.pump()
    assert (report.sent, report.backlog, report.error) == (4, 0, None)
    events = sorted(_events(fhir_server), key=lambda e: e["recorded"])
    assert [e["type"]["code"] for e in events] == ["110114", "110103", "110113", "110114"]
    assert [e["outcome"] for e in events] == ["0", "0", "0", "4"]
    assert events[2]["subtype"][0]["code"] == "110131"  # software configuration: a model approval
    schema = json.loads(fhir_ci.schema_path().read_text())
    validator = jsonschema.Draft6Validator(schema)
    for event in events:
        assert [e.message for e in validator.iter_errors(event)] == []
    assert "radgate-audit-details" not in json.dumps(events)  # details stay local by default
    # A resend (cursor lost) updates the same resources.
    from governance.audit import AuditLog

    first = AuditLog().entries(limit=1)[0]
    httpx.put(
        f"{fhir_server.url}/AuditEvent/{audit_event(first).id}",
        content=audit_event(first).model_dump_json(exclude_none=True),
        headers={"Authorization": f"Bearer {fhir_server.token}", "Content-Type": "application/fhir+json"},
        timeout=10,
    ).raise_for_status()
    assert len(_events(fhir_server)) == 4
