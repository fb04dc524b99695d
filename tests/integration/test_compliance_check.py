"""The compliance check goes red for each planted fault and is green otherwise (real catalog,
store, audit log, MLflow SQLite registry; nothing mocked)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
import typer
from pydicom import dcmread
from sqlalchemy import select, update
from typer.testing import CliRunner

from governance.audit import AuditLog, AuditRow
from governance.catalog import Instance, open_catalog
from governance.settings import get_settings
from governance.testing import Cast, approved_version, copy_store, create_cast
from imaging.compliance import CheckStatus, run_compliance_check
from imaging.store import ContentStore
from tests.integration.test_compliance_support import Ingested, ingest_demo, mlflow_template

pytestmark = pytest.mark.integration
__all__ = ["mlflow_template"]


@pytest.fixture()
def platform(radgate_home: Path) -> tuple[Ingested, Cast]:
    ingested = ingest_demo(radgate_home, patients=6, images=2, size=32)
    return ingested, create_cast()


@pytest.fixture()
def anchored(
    platform: tuple[Ingested, Cast], mlflow_template: Path, radgate_home: Path
) -> tuple[Ingested, Cast]:
    copy_store(mlflow_template, radgate_home)
    AuditLog().anchor_to_mlflow()
    return platform


def _statuses(cast: Cast, **kwargs: object) -> dict[str, CheckStatus]:
    report = run_compliance_check(cast["auditor"], sample=0, **kwargs)  # type: ignore[arg-type]
    return {r.name: r.status for r in report.results}


def _only_red(statuses: dict[str, CheckStatus], name: str) -> None:
    assert statuses[name] is CheckStatus.FAIL, statuses
    assert [n for n, s in statuses.items() if s is CheckStatus.FAIL] == [name], statuses


def test_green_when_nothing_is_planted(anchored: tuple[Ingested, Cast]) -> None:
    _, cast = anchored
    report = run_compliance_check(cast["auditor"], sample=0)
    assert report.status is CheckStatus.PASS, [r.to_dict() for r in report.results]
    store = report.result("store_deidentified")
    assert store.evidence["scanned"] == store.evidence["instances"] == 12
    data = report.to_dict()
    assert all(c["safeguards"] for c in data["checks"])
    # Audited, and the audit chain is still intact after it.
    entry = AuditLog().entries(action="compliance.check")[-1]
    assert entry.details["status"] == "pass" and entry.seq == report.audit_seq
    assert AuditLog().verify().ok


def test_red_on_a_non_deidentified_file(anchored: tuple[Ingested, Cast]) -> None:
    ingested, cast = anchored
    raw = ingested.demo.studies[0].path.read_bytes()
    store = ContentStore.from_settings()
    key = store.put(raw)
    with open_catalog().session() as session:
        template = session.scalars(select(Instance)).first()
        assert template is not None
        session.add(
            Instance(
                sha256=key,
                input_sha256=key,
                sop_instance_uid="x",
                series_instance_uid="x",
                study_instance_uid=template.study_instance_uid,
                patient_pseudonym=template.patient_pseudonym,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                modality="DX",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                size=len(raw),
                store_key=key,
                profile=template.profile,
                key_id=template.key_id,
            )
        )
    report = run_compliance_check(cast["auditor"], sample=0)
    _only_red({r.name: r.status for r in report.results}, "store_deidentified")
    evidence = report.result("store_deidentified").evidence
    assert evidence["failing"] == [key[:12]]
    # (the synthetic originals' UIDs are 2.25 UUID-derived, so "foreign-uid" cannot tell them apart)
    assert {"no-marker", "residual-phi", "pseudonym-mismatch"} <= set(evidence["problems"])
    # The evidence names the instance by hash only: no original value is in the report.
    text = json.dumps(report.to_dict())
    study = ingested.demo.studies[0]
    assert study.patient_id not in text and study.accession_number not in text


def test_red_on_a_private_tag(anchored: tuple[Ingested, Cast]) -> None:
    _, cast = anchored
    store = ContentStore.from_settings()
    with open_catalog().session() as session:
        inst = session.scalars(select(Instance)).first()
        assert inst is not None
        ds = dcmread(BytesIO(store.get(inst.store_key)))
        ds.add_new(0x00190010, "LO", "VENDOR X")
        ds.add_new(0x00191001, "LO", "some vendor value")
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        inst.sha256 = inst.store_key = store.put(buffer.getvalue())
        planted = inst.sha256[:12]
    report = run_compliance_check(cast["auditor"], sample=0)
    _only_red({r.name: r.status for r in report.results}, "store_deidentified")
    evidence = report.result("store_deidentified").evidence
    assert evidence["failing"] == [planted] and set(evidence["problems"]) == {"private-attribute"}


def test_red_on_a_tampered_audit_row(anchored: tuple[Ingested, Cast]) -> None:
    _, cast = anchored
    with open_catalog().session() as session:
        session.execute(update(AuditRow).where(AuditRow.seq == 2).values(actor="mallory"))
    report = run_compliance_check(cast["auditor"], sample=0)
    _only_red({r.name: r.status for r in report.results}, "audit_chain")
    assert report.result("audit_chain").evidence["problem"] == "altered"
    assert report.result("audit_chain").evidence["first_bad_seq"] == 2


def test_red_on_an_expired_approval(anchored: tuple[Ingested, Cast], radgate_home: Path) -> None:
    _, cast = anchored
    from governance.approvals import registry_client

    version = approved_version(registry_client(), "cxr", cast=cast)
    AuditLog().anchor_to_mlflow()
    now = datetime.now(UTC)
    assert _statuses(cast, now=now)["approvals"] is CheckStatus.PASS
    # 350 days on: still valid (365) but within the 30-day warning window.
    soon = run_compliance_check(cast["auditor"], sample=0, now=now + timedelta(days=350))
    assert soon.result("approvals").status is CheckStatus.WARN
    assert soon.result("approvals").evidence["expiring"][0]["model"] == f"cxr/{version}@production"
    # 400 days on: the approvals have expired but the alias still serves the version.
    late = run_compliance_check(cast["auditor"], sample=0, now=now + timedelta(days=400))
    approvals = late.result("approvals")
    assert approvals.status is CheckStatus.FAIL
    assert approvals.evidence["without_valid_approval"][0]["model"] == f"cxr/{version}@production"
    assert late.result("access_tokens").status is CheckStatus.WARN  # nobody acted for 400 days


def test_red_on_a_world_readable_key(
    radgate_home: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path
) -> None:
    monkeypatch.delenv("RADGATE_PROJECT_KEY")
    get_settings.cache_clear()
    ingest_demo(radgate_home, patients=3, images=1, size=32)  # creates the key file (0600)
    cast = create_cast()
    copy_store(mlflow_template, radgate_home)
    AuditLog().anchor_to_mlflow()
    key_file = get_settings().resolved_key_file
    assert _statuses(cast)["project_key"] is CheckStatus.PASS
    os.chmod(key_file, 0o644)
    report = run_compliance_check(cast["auditor"], sample=0)
    _only_red({r.name: r.status for r in report.results}, "project_key")
    assert report.result("project_key").evidence["mode"] == "0o644"


def test_cli_table_json_and_roles(anchored: tuple[Ingested, Cast], tmp_path: Path) -> None:
    _, cast = anchored
    from imaging.compliance import cli as compliance_cli

    app = typer.Typer()
    compliance_cli.register(app)
    out = tmp_path / "check.json"
    result = CliRunner().invoke(
        app, ["compliance", "check", "--all", "--out", str(out), "--token", cast.tokens["auditor"]]
    )
    assert result.exit_code == 0, result.output
    assert "store_deidentified" in result.output and "PASS" in result.output
    assert json.loads(out.read_text())["status"] == "pass"
    denied = CliRunner().invoke(app, ["compliance", "check", "--token", cast.tokens["eng"]])
    assert denied.exit_code == 2 and "needs role" in denied.output and "Traceback" not in denied.output


def test_red_on_a_served_input_kept_past_its_expiry(anchored: tuple[Ingested, Cast]) -> None:
    ingested, cast = anchored
    from sqlalchemy import MetaData, Table, insert

    from governance.keys import load_project_key
    from serving.monitoring.live import pending_input_path

    catalog = open_catalog()
    live = Table("monitoring_records", MetaData(), autoload_with=catalog.engine)
    now = datetime.now(UTC)
    path = pending_input_path("req-9")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(load_project_key().seal(ingested.demo.studies[0].path.read_bytes(), b"req-9"))
    with catalog.engine.begin() as connection:
        row = {
            "request_id": "req-9",
            "model_name": "cxr",
            "model_version": "1",
            "created_at": now,
            "features": {},
            "embedding": [],
            "predicted_label": "opacity",
        }
        connection.execute(insert(live), [{**row, "input_expires_at": now + timedelta(hours=1)}])
    assert _statuses(cast)["retention"] is CheckStatus.PASS
    report = run_compliance_check(cast["auditor"], sample=0, now=now + timedelta(hours=2))
    _only_red({r.name: r.status for r in report.results}, "retention")
    assert report.result("retention").evidence["pending_inputs_overdue"] == 1
