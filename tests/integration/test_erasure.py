"""Patient erasure end to end: real catalog, store, quarantine, dataset versions, MLflow registry."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
import typer
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from typer.testing import CliRunner

from governance.approvals import registry_client
from governance.audit import AuditLog
from governance.catalog import Instance, Pseudonym, QuarantineRecord, open_catalog
from governance.testing import Cast, approved_version, copy_store, create_cast, create_version
from imaging.compliance import (
    ERASURE_REVIEW_TAG,
    CheckStatus,
    ErasureError,
    erase_patient,
    list_erasures,
    plan_erasure,
    run_compliance_check,
    superseded_by,
)
from imaging.datasets import create_dataset, get_dataset
from imaging.deid import Pseudonymizer
from imaging.store import ContentStore
from tests.integration.test_compliance_support import (
    copy_study,
    ingest_demo,
    ingest_files,
    mlflow_template,
    write_labels,
)

pytestmark = pytest.mark.integration
__all__ = ["mlflow_template"]


@pytest.fixture()
def world(radgate_home: Path, mlflow_template: Path) -> dict[str, object]:
    """6 patients (2 studies each) + a quarantined study of patient 0; dataset ``all`` holds
    everyone, ``others`` everyone but patient 0; model ``cxr`` v1 trained on ``all`` (approved
    and serving), model ``cxr-b`` v1 trained on ``others``; a feedback table of another domain."""
    ingested = ingest_demo(radgate_home, patients=6, images=2, size=32)
    studies = ingested.demo.studies
    target = studies[0].patient_id
    burned = copy_study(
        studies[0],
        ingested.source / "q" / "burned.dcm",
        patient_id=target,
        accession="QACC1",
        BurnedInAnnotation="YES",
    )
    # Pixel data shorter than the header declares cannot be decoded for burned-in screening,
    # so the instance is quarantined (with patient 0's identity sealed in its record).
    damaged = pydicom.dcmread(burned)
    damaged.PixelData = damaged.PixelData[: len(damaged.PixelData) // 2]
    damaged.save_as(burned)
    assert ingest_files([burned])["quarantined"] == 1
    everyone = write_labels(
        radgate_home.parent / "all.csv", [(s.accession_number, i % 2) for i, s in enumerate(studies)]
    )
    others = write_labels(
        radgate_home.parent / "others.csv",
        [(s.accession_number, i % 2) for i, s in enumerate(studies) if s.patient_id != target],
    )
    ds_all = create_dataset("all", everyone).version
    ds_others = create_dataset("others", others).version
    copy_store(mlflow_template, radgate_home)
    client = registry_client()
    cast = create_cast()
    served = approved_version(client, "cxr", cast=cast)
    client.set_model_version_tag("cxr", served, "radgate.dataset_version", ds_all.id)
    other_version, _ = create_version(client, "cxr-b", tags={"radgate.dataset_version": ds_others.id})
    AuditLog().anchor_to_mlflow()
    # Another domain's table keyed by the patient pseudonym (e.g. clinician feedback cases).
    pseudonym = Pseudonymizer(__import__("governance.keys").keys.load_project_key()).patient(target)
    meta = MetaData()
    feedback = Table(
        "feedback_cases",
        meta,
        Column("id", Integer, primary_key=True),
        Column("patient_pseudonym", String(64)),
        Column("verdict", String(16)),
    )
    catalog = open_catalog()
    meta.create_all(catalog.engine)
    with catalog.engine.begin() as connection:
        connection.execute(
            insert(feedback),
            [
                {"patient_pseudonym": pseudonym, "verdict": "agree"},
                {"patient_pseudonym": "RGOTHER", "verdict": "agree"},
            ],
        )
    # Serving's feedback cases name the de-identified instance they concern (real table, 0006).
    with catalog.engine.begin() as connection:
        real = Table("monitoring_feedback", MetaData(), autoload_with=connection)
        theirs = connection.execute(
            select(Instance.sha256).where(Instance.patient_pseudonym == pseudonym)
        ).first()
        someone = connection.execute(
            select(Instance.sha256).where(Instance.patient_pseudonym != pseudonym)
        ).first()
        assert theirs is not None and someone is not None
        connection.execute(
            insert(real),
            [
                {
                    "request_id": f"req-{n}",
                    "model_name": "cxr",
                    "model_version": "1",
                    "reviewer": "doc",
                    "agree": True,
                    "predicted_label": "opacity",
                    "label": "opacity",
                    "instance_sha256": sha,
                    "input_status": "kept",
                    "created_at": datetime.now(UTC),
                }
                for n, sha in enumerate([theirs[0], someone[0]])
            ],
        )
    # Serving keeps a served request's raw input sealed while feedback may come (real layout).
    from serving.monitoring.live import pending_input_path
    from serving.monitoring.sealing import RECORD_INPUT, serving_key

    live = Table("monitoring_records", MetaData(), autoload_with=catalog.engine)
    later = datetime.now(UTC) + timedelta(hours=24)
    for request_id, study in (("live-1", studies[1]), ("live-2", studies[4])):  # patient 0, patient 2
        path = pending_input_path(request_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        sealed = serving_key().seal(study.path.read_bytes(), request_id.encode(), record=RECORD_INPUT)
        path.write_bytes(sealed)
        with catalog.engine.begin() as connection:
            connection.execute(
                insert(live),
                [
                    {
                        "request_id": request_id,
                        "model_name": "cxr",
                        "model_version": "1",
                        "created_at": datetime.now(UTC),
                        "features": {},
                        "embedding": [],
                        "predicted_label": "opacity",
                        "input_expires_at": later,
                    }
                ],
            )
    return {
        "ingested": ingested,
        "target": target,
        "pseudonym": pseudonym,
        "cast": cast,
        "ds_all": ds_all,
        "ds_others": ds_others,
        "served": served,
        "other_version": other_version,
    }


def _instances() -> dict[str, str]:
    with open_catalog().session() as session:
        return {i.sha256: i.patient_pseudonym for i in session.scalars(select(Instance))}


def test_dry_run_lists_everything_and_changes_nothing(world: dict[str, object]) -> None:
    cast: Cast = world["cast"]  # type: ignore[assignment]
    before = _instances()
    plan = plan_erasure(str(world["target"]), principal=cast["broker"])
    assert len(plan.instances) == 2 and len(plan.quarantine) == 1
    rows = len(plan.instances) + len(plan.quarantine) + plan.map_entries + plan.lineage_rows + 2
    assert {h.store: h.count for h in plan.holdings} == {
        "catalog": rows,
        "fhir-outbox": 0,
        "object-store": 2,
        "served-inputs": 1,
    }
    assert [d["id"] for d in plan.datasets] == [world["ds_all"].id]  # type: ignore[attr-defined]
    assert plan.models == [{"name": "cxr", "version": world["served"], "dataset_version": world["ds_all"].id}]  # type: ignore[attr-defined]
    assert plan.other_rows == {
        "feedback_cases.patient_pseudonym": 1,
        "monitoring_feedback.instance_sha256": 1,
    }
    assert plan.map_entries >= 2 + 2 * 4  # patient id + name, and per study: study/series/SOP/accession
    assert _instances() == before
    text = json.dumps(plan.to_dict())
    assert str(world["target"]) not in text and str(world["pseudonym"]) not in text
    with pytest.raises(ErasureError):
        plan_erasure(str(world["target"]), principal=cast["eng"])
    assert AuditLog().entries(action="erasure.plan.denied")


def test_erasure_removes_the_patient_keeps_everyone_else_and_flags_exact_models(
    world: dict[str, object],
) -> None:
    cast: Cast = world["cast"]  # type: ignore[assignment]
    target, pseudonym = str(world["target"]), str(world["pseudonym"])
    before = _instances()
    theirs = [sha for sha, p in before.items() if p == pseudonym]
    assert len(theirs) == 2
    with pytest.raises(ErasureError, match="admin"):
        erase_patient(target, principal=cast["broker"], approver=cast["eng"], reason="Art. 17 request 42")
    erasure_id, plan, superseded = erase_patient(
        target, principal=cast["broker"], approver=cast["admin"], reason="Art. 17 request 42"
    )
    store = ContentStore.from_settings()
    after = _instances()
    # None of theirs, all of everyone else's (rows and objects).
    assert set(after) == set(before) - set(theirs)
    assert all(not store.exists(sha) for sha in theirs)
    assert all(store.exists(sha) for sha in after)
    with open_catalog().session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Pseudonym).where(Pseudonym.pseudonym == pseudonym)
            )
            == 0
        )
        assert session.scalar(select(func.count()).select_from(QuarantineRecord)) == 0
        feedback = session.execute(
            select(Table("feedback_cases", MetaData(), autoload_with=session.get_bind()))
        ).all()
        cases = session.execute(
            select(Table("monitoring_feedback", MetaData(), autoload_with=session.get_bind()))
        ).all()
    assert [row.patient_pseudonym for row in feedback] == ["RGOTHER"]
    assert [row.request_id for row in cases] == ["req-1"]
    assert not list(Path(plan.quarantine[0][1]).parent.glob("*.sealed"))
    from serving.monitoring.live import pending_input_path

    assert not pending_input_path("live-1").exists() and pending_input_path("live-2").exists()
    # Datasets: "all" superseded by a successor without the patient; "others" untouched.
    ds_all = world["ds_all"]
    successor = superseded_by(ds_all.id)  # type: ignore[attr-defined]
    assert successor and superseded[0]["removed_items"] == 2
    current = get_dataset("all")
    assert current.id == successor and len(current.manifest.items) == len(ds_all.manifest.items) - 2  # type: ignore[attr-defined]
    assert all(i.patient != pseudonym for i in current.manifest.items)
    from imaging.quality import build_report

    stale = build_report(ds_all).to_dict()  # type: ignore[arg-type]
    assert stale["dataset"]["superseded_by"] == successor and "superseded" in {
        w["code"] for w in stale["warnings"]
    }
    assert stale["pixels"]["reasons"] == {"missing-object": 2}
    assert superseded_by(world["ds_others"].id) is None  # type: ignore[attr-defined]
    # Models: exactly the one trained on the affected version is flagged.
    client = registry_client()
    assert client.get_model_version("cxr", str(world["served"])).tags.get(ERASURE_REVIEW_TAG) == "required"
    assert ERASURE_REVIEW_TAG not in client.get_model_version("cxr-b", str(world["other_version"])).tags
    # Audit: chain intact, entries name no identifier of the patient.
    log = AuditLog()
    assert log.verify().ok
    buffer = io.StringIO()
    log.export(buffer)
    assert target not in buffer.getvalue() and "Art. 17 request 42" not in buffer.getvalue()
    assert log.entries(action="erasure.complete")[-1].target == f"erasure:{erasure_id}"
    # The served model learned from the erased patient: the compliance check says so.
    report = run_compliance_check(cast["auditor"], sample=0)
    assert report.result("approvals").status is CheckStatus.FAIL
    assert report.result("approvals").evidence["flagged_by_erasure"] == [f"cxr/{world['served']}@production"]
    assert report.result("approvals").evidence["awaiting_erasure_review"] == [f"cxr/{world['served']}"]
    assert report.result("store_deidentified").status is CheckStatus.PASS
    listed = list_erasures()
    assert [e["id"] for e in listed] == [erasure_id] and "reason_sealed" not in listed[0]["summary"]
    assert listed[0]["requested_by"] == "broker" and listed[0]["approved_by"] == "admin"
    # A second run finds nothing left and breaks nothing.
    again = plan_erasure(target, principal=cast["broker"])
    assert again.instances == [] and again.quarantine == [] and again.map_entries == 0


def test_erase_cli_dry_run_and_execute(world: dict[str, object]) -> None:
    cast: Cast = world["cast"]  # type: ignore[assignment]
    from imaging.compliance import cli as compliance_cli

    app = typer.Typer()
    compliance_cli.register(app)
    target = str(world["target"])
    dry = CliRunner().invoke(
        app, ["erase", "--patient", target, "--dry-run", "--token", cast.tokens["broker"]]
    )
    assert dry.exit_code == 0, dry.output
    assert "would erase: 2 stored instance(s), 1 quarantined" in dry.output and target not in dry.output
    unsigned = CliRunner().invoke(
        app, ["erase", "--patient", target, "--reason", "r", "--token", cast.tokens["broker"]]
    )
    assert unsigned.exit_code == 2 and "co-sign" in unsigned.output
    asked = CliRunner().invoke(
        app,
        [
            "erase",
            "--patient",
            target,
            "--reason",
            "request 7",
            "--request",
            "--json",
            "--token",
            cast.tokens["broker"],
        ],
    )
    assert asked.exit_code == 0, asked.output
    request_id = json.loads(asked.output)["request_id"]
    confirmed = CliRunner().invoke(
        app, ["erase-confirm", request_id], env={"RADGATE_TOKEN": cast.tokens["admin"]}
    )
    assert confirmed.exit_code == 0, confirmed.output
    done = CliRunner().invoke(
        app,
        [
            "erase",
            "--patient",
            target,
            "--reason",
            "request 7",
            "--token",
            cast.tokens["broker"],
            "--confirmation",
            request_id,
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["dry_run"] is False and len(result["instances"]) == 2 and result["superseded"]
    listed = CliRunner().invoke(app, ["compliance", "erasures", "--json", "--token", cast.tokens["auditor"]])
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["id"] == result["erasure_id"]
    refused = CliRunner().invoke(app, ["compliance", "erasures", "--token", cast.tokens["eng"]])
    assert refused.exit_code == 2
