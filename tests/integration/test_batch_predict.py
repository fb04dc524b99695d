"""Batch inference over a cohort with Ray Data on a real local Ray: a model registered in a real
MLflow store and promoted through the real approval workflow (the evidence is the fixed passing
evidence every serving test registers), a dataset version made from de-identified instances,
``radgate predict --dataset`` writing the service's results and DICOM objects and the service's
audit entries; the gate asked per batch: a revocation mid-run denies the next batch, a new
promotion is loaded for the batch after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

MODEL = "cohort-opacity"


@pytest.fixture(scope="module")
def radgate_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One RADGATE_HOME shared with the Ray workers (they inherit the environment)."""
    from governance.settings import get_settings

    home = tmp_path_factory.mktemp("batch-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "44" * 32)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        mp.delenv("RADGATE_OBJECT_STORE", raising=False)
        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def cohort(radgate_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import ray

    from governance.testing import create_cast
    from imaging.datasets import create_dataset
    from imaging.demo_data import write_demo_studies
    from imaging.ingest import Sink, run_files
    from serving.testing import approve_and_promote, register_model

    cast = create_cast()
    version = register_model(MODEL)
    approve_and_promote(MODEL, version, cast)
    demo = write_demo_studies(
        tmp_path_factory.mktemp("demo"), patients=5, images_per_patient=2, size=64, seed=4
    )
    report = run_files(demo.files, sink=Sink.STORE, workers=1)
    assert report.deidentified == 10
    created = create_dataset("cohort", demo.labels_csv, label_names=["no_finding", "opacity"])
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=f"/tmp/rg-batch-{os.getpid()}"
    )
    try:
        yield {"cast": cast, "version": version, "dataset": created.version, "address": _address()}
    finally:
        ray.shutdown()


def _address() -> str:
    import ray

    return str(ray.get_runtime_context().gcs_address)


def _audit(action: str) -> list[Any]:
    from governance.audit import AuditLog

    return [e for e in AuditLog().entries(actions=[action]) if e.details.get("batch")]


def test_predict_over_a_dataset_version_writes_results_objects_and_audit(
    cohort: dict[str, Any], tmp_path: Path
) -> None:
    from pydicom import dcmread

    from imaging.store import ContentStore

    output = tmp_path / "results"
    radgate = Path(sys.executable).with_name("radgate")
    command = [
        str(radgate), "predict", "--dataset", "cohort", "--model", MODEL, "--output", str(output),
        "--batch-size", "4", "--ray-address", cohort["address"], "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    env = {**os.environ, "RADGATE_TOKEN": cohort["cast"].tokens["eng"]}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    items = cohort["dataset"].manifest.items
    assert report["instances"] == report["predicted"] == len(items) == 10
    assert report["batches"] == 3 and report["versions"] == {cohort["version"]: 10}
    assert report["denied"] == report["failed"] == 0 and report["objects"] == 10

    folder = output / MODEL / f"v{cohort['version']}"
    for item in items:
        document = json.loads((folder / f"{item.sha256}.json").read_text())
        assert document["model"] == {"name": MODEL, "version": cohort["version"]}
        assert document["approval"]["alias"] == "production"
        assert document["result"]["labels"] == ["no_finding", "opacity"]
        assert abs(sum(document["result"]["probabilities"]) - 1) < 1e-4
        (name,) = document["objects"]
        sr = dcmread(folder / name)
        source = dcmread(ContentStore.from_settings().path(item.store_key))
        assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID
        assert sr.PatientID == source.PatientID  # the pseudonym: results never carry identities

    # The service's audit entries: one serve.predict per batch, inputs named by hash, by the caller.
    entries = _audit("serve.predict")
    assert len(entries) == 3 and sum(e.details["n"] for e in entries) == 10
    assert {e.actor for e in entries} == {"eng"} and {e.role for e in entries} == {"ml-engineer"}
    hashes = {h for e in entries for h in e.details["inputs_sha256"]}
    assert hashes == {item.sha256 for item in items}
    from governance.audit import AuditLog

    (run,) = AuditLog().entries(actions=["serve.batch.run"])
    assert (
        run.actor == "eng" and run.details["predicted"] == 10 and run.details["dataset"] == report["dataset"]
    )
    # A rerun finds every result there: nothing predicted twice.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads((tmp_path / "report.json").read_text())
    assert rerun["existing"] == 10 and rerun["predicted"] == 0


def test_the_gate_decides_every_batch_revocation_and_new_promotion_mid_run(
    cohort: dict[str, Any], tmp_path: Path
) -> None:
    from governance.approvals import Workflow
    from governance.settings import get_settings
    from serving.batch import BatchJob, BatchPredictor
    from serving.testing import approve_and_promote, register_model

    name = "cohort-switch"
    cast = cohort["cast"]
    first = register_model(name, seed=5)
    approve_and_promote(name, first, cast)
    job = BatchJob(
        model=name, alias="production", version=None, output=str(tmp_path / "out"),
        store_root=get_settings().resolved_object_store, dataset_id=cohort["dataset"].id,
    )  # fmt: skip
    actor = BatchPredictor(job)  # in this process: the same class Ray Data runs, batch by batch
    items = cohort["dataset"].manifest.items

    def batch(part: slice) -> dict[str, np.ndarray]:
        chosen = items[part]
        return actor(
            {
                "sha256": np.array([i.sha256 for i in chosen], dtype=object),
                "store_key": np.array([i.store_key for i in chosen], dtype=object),
            }
        )

    one = batch(slice(0, 3))
    assert list(one["status"]) == ["predicted"] * 3 and set(one["version"]) == {first}
    Workflow().revoke(cast["doc"], name, first, "withdrawn mid-run")
    two = batch(slice(3, 6))
    assert list(two["status"]) == ["denied"] * 3 and all("production" in str(r) for r in two["reason"])
    assert not any((tmp_path / "out" / name / f"v{first}" / f"{i.sha256}.json").exists() for i in items[3:6])
    second = register_model(name, seed=6)
    approve_and_promote(name, second, cast)
    three = batch(slice(3, 6))
    assert list(three["status"]) == ["predicted"] * 3 and set(three["version"]) == {second}
    assert actor.predictor is not None and actor.predictor.version == second


def test_a_cohort_from_a_study_list(cohort: dict[str, Any]) -> None:
    from imaging.datasets import DatasetError
    from serving.batch import cohort_rows

    items = cohort["dataset"].manifest.items
    chosen = {items[0].study, items[5].study}
    name, rows = cohort_rows(None, studies=[*chosen, "", items[0].study])
    assert name.startswith("studies:")
    assert {r["sha256"] for r in rows} == {i.sha256 for i in items if i.study in chosen}
    assert all(r["store_key"] == r["sha256"] for r in rows)
    with pytest.raises(DatasetError, match="no stored instance"):
        cohort_rows(None, studies=["1.2.3.4.5"])
    with pytest.raises(DatasetError, match="not both"):
        cohort_rows("cohort", studies=list(chosen))
    with pytest.raises(DatasetError, match="1 to"):
        cohort_rows(None, studies=[" "])
