"""The MLflow registry as a review store: it names exactly the runs and model versions trained on a
dataset version that holds the patient, flags them naming the erasure, and reports a version it
cannot flag instead of passing over it. Real catalog, dataset versions and MLflow SQLite registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from governance.approvals import registry_client
from governance.audit import AuditLog
from governance.keys import load_project_key
from governance.settings import get_settings
from governance.tags import Tag
from governance.testing import copy_store, create_version
from imaging.compliance.holdings import (
    Erasure,
    PatientQuery,
    PatientStore,
    ReviewStore,
    patient_stores,
    review_stores,
)
from imaging.datasets import create_dataset
from imaging.deid import Pseudonymizer
from tests.integration.test_compliance_support import ingest_demo, mlflow_template, write_labels

pytestmark = pytest.mark.integration
__all__ = ["mlflow_template"]


@pytest.fixture()
def registry(radgate_home: Path, mlflow_template: Path) -> dict[str, str]:
    """3 patients; dataset ``all`` holds everyone, ``others`` all but patient 0; model ``cxr`` v1
    and one more run trained on ``all``, model ``cxr-b`` v1 on ``others``."""
    studies = ingest_demo(radgate_home, patients=3, images=1, size=32).demo.studies
    target = studies[0].patient_id
    everyone = write_labels(radgate_home.parent / "all.csv", [(s.accession_number, 1) for s in studies])
    others = write_labels(
        radgate_home.parent / "others.csv",
        [(s.accession_number, 1) for s in studies if s.patient_id != target],
    )
    ds_all, ds_others = create_dataset("all", everyone).version, create_dataset("others", others).version
    copy_store(mlflow_template, radgate_home)
    client = registry_client()
    mine, _ = create_version(client, "cxr", tags={Tag.DATASET_VERSION: ds_all.id})
    create_version(client, "cxr-b", tags={Tag.DATASET_VERSION: ds_others.id})
    experiment = client.get_experiment_by_name("radgate-tests")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id, tags={Tag.DATASET_VERSION: ds_all.id})
    return {"target": target, "version": mine, "run": run.info.run_id, "dataset": ds_all.id}


def _query(patient_id: str) -> PatientQuery:
    settings = get_settings()
    key = load_project_key(settings)
    pseudonym = Pseudonymizer(key).patient(patient_id)
    return PatientQuery(patient_id=patient_id, pseudonym=pseudonym, key=key, settings=settings)


def _erasure() -> Erasure:
    return Erasure("e" * 16, "s" * 32, "broker", "honest-broker", get_settings())


def test_the_registry_is_declared_as_a_review_store_not_a_removing_one() -> None:
    stores = review_stores()
    assert [s.name for s in stores] == ["mlflow-registry"]
    assert all(isinstance(s, ReviewStore) for s in stores)
    assert "mlflow-registry" not in {s.name for s in patient_stores()}
    assert not isinstance(stores[0], PatientStore)  # it flags, it never deletes a model


def test_the_registry_names_exactly_what_learned_from_the_patient(registry: dict[str, str]) -> None:
    from training.erasure_stores import MlflowRegistryStore

    holding = MlflowRegistryStore().find(_query(registry["target"]))
    assert holding.unreadable == []
    assert holding.items == [f"cxr/{registry['version']}", registry["run"]]
    assert [s["kind"] for s in holding.shown] == ["model-version", "run"]
    assert holding.shown[0]["dataset_version"] == registry["dataset"]
    # A patient in no dataset version: nothing learned from them.
    other = MlflowRegistryStore().find(_query("NOT-A-PATIENT"))
    assert other.items == [] and other.shown == []


def test_flagging_names_the_erasure_and_reports_what_it_cannot_flag(registry: dict[str, str]) -> None:
    from training.erasure_stores import MlflowRegistryStore

    store = MlflowRegistryStore()
    holding = store.find(_query(registry["target"]))
    client = registry_client()
    client.delete_model_version("cxr", registry["version"])  # gone between the plan and the erasure
    unflagged = store.flag(holding, _erasure())
    assert [u["store"] for u in unflagged] == ["mlflow-registry"]
    assert unflagged[0]["item"] == f"cxr/{registry['version']}" and unflagged[0]["error"]
    tags = client.get_run(registry["run"]).data.tags
    assert tags[Tag.ERASURE_REVIEW] == "required"  # the run after the failed version is still flagged
    assert json.loads(tags[f"{Tag.ERASURE_PREFIX}{'e' * 16}"]) == {
        "erasure_id": "e" * 16,
        "subject": "s" * 32,
    }
    assert not AuditLog().entries(action="model.erasure_flag")  # no flag recorded that did not happen


def test_flagging_a_model_version_records_it_in_the_audit_chain(registry: dict[str, str]) -> None:
    from training.erasure_stores import MlflowRegistryStore

    store = MlflowRegistryStore()
    assert store.flag(store.find(_query(registry["target"])), _erasure()) == []
    version = registry_client().get_model_version("cxr", registry["version"])
    assert version.tags[Tag.ERASURE_REVIEW] == "required"
    entries = AuditLog().entries(action="model.erasure_flag")
    assert [e.target for e in entries] == [f"model:cxr/{registry['version']}"]
    assert entries[0].details == {"erasure_id": "e" * 16, "dataset_version": registry["dataset"]}
