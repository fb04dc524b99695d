"""Helpers for tests in every package: a registered model version, users, and an approved,
promoted version, all through the real MLflow registry and the real workflow (no mocks).

Serving tests use :func:`approved_version` to get a model the gate allows.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from governance.auth import Principal, Role, add_user, authenticate
from governance.settings import get_settings
from governance.tags import Tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "GOOD_METRICS",
    "GOOD_TAGS",
    "Cast",
    "approved_version",
    "cast_token",
    "copy_store",
    "create_cast",
    "create_version",
]

GOOD_METRICS = {
    "test_auroc": 0.91,
    "test_sensitivity": 0.86,
    "max_subgroup_gap": 0.04,
    "test_ece": 0.03,
}
GOOD_TAGS = {Tag.SALIENCY_SANITY.value: "passed", Tag.DATASET_DEIDENTIFIED.value: "true"}


@dataclass(frozen=True)
class Cast:
    """One user per role plus a second ML engineer and reviewer (for two-person rules), with
    their tokens."""

    principals: dict[str, Principal]
    tokens: dict[str, str]

    def __getitem__(self, name: str) -> Principal:
        return self.principals[name]

    def token_for(self, role: Role | str) -> str:
        """The token of the cast's (first) member with ``role``."""
        wanted = Role.parse(role)
        return next(self.tokens[n] for n, p in self.principals.items() if p.role is wanted)


def create_cast() -> Cast:
    """Bootstrap an admin and create: ``admin``, ``eng`` and ``eng2`` (ml-engineer), ``doc``
    and ``doc2`` (clinical-reviewer), ``steward``, ``pacs``, ``broker``, ``auditor``."""
    first = add_user("admin", Role.ADMIN, by=None)
    admin = authenticate(first.token)
    people = {
        "eng": Role.ML_ENGINEER,
        "eng2": Role.ML_ENGINEER,
        "doc": Role.CLINICAL_REVIEWER,
        "doc2": Role.CLINICAL_REVIEWER,
        "steward": Role.DATA_STEWARD,
        "pacs": Role.PACS_CLIENT,
        "broker": Role.HONEST_BROKER,
        "auditor": Role.AUDITOR,
    }
    tokens = {"admin": first.token}
    principals = {"admin": admin}
    for name, role in people.items():
        issued = add_user(name, role, by=admin)
        tokens[name] = issued.token
        principals[name] = authenticate(issued.token)
    return Cast(principals, tokens)


_CASTS: dict[str, Cast] = {}


def cast_token(role: Role | str) -> str:
    """A token of ``role`` for CLI tests (``RADGATE_TOKEN``): the cast of the current catalog,
    created on first use (the catalog must have no user yet then)."""
    url = get_settings().resolved_catalog_url
    if url not in _CASTS:
        _CASTS[url] = create_cast()
    return _CASTS[url].token_for(role)


def create_version(
    client: MlflowClient,
    name: str,
    *,
    payload: bytes = b"model weights v1",
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    local_artifacts: bool = True,
) -> tuple[str, Path]:
    """Log a one-file model artifact in a run and register it; returns (version, artifact dir).

    With ``local_artifacts=False`` the experiment uses the tracking server's artifact store
    (``mlflow-artifacts:``) and the returned directory is only meaningful to the server.
    """
    home = get_settings().home
    experiment_name = "radgate-tests" if local_artifacts else "radgate-tests-served"
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            experiment_name, artifact_location=(home / "mlartifacts").as_uri() if local_artifacts else None
        )
    )
    run = client.create_run(experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.bin").write_bytes(payload)
        (Path(tmp) / "MLmodel").write_text("flavors: {}\n")
        client.log_artifacts(run.info.run_id, tmp, "model")
    for metric, number in (GOOD_METRICS if metrics is None else metrics).items():
        client.log_metric(run.info.run_id, metric, number)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    for key, value in (GOOD_TAGS if tags is None else tags).items():
        client.set_model_version_tag(name, mv.version, key, value)
    artifact_dir = home / "mlartifacts" / run.info.run_id / "artifacts" / "model"
    if not local_artifacts:
        artifact_dir = Path(experiment_id) / run.info.run_id / "artifacts" / "model"
    return str(mv.version), artifact_dir


def approved_version(
    client: MlflowClient,
    name: str,
    alias: str = "production",
    cast: Cast | None = None,
    *,
    payload: bytes = b"model weights v1",
) -> str:
    """Register a version with good evidence, submit, approve by both roles and promote it."""
    from governance.approvals import Workflow

    cast = cast or create_cast()
    version, _ = create_version(client, name, payload=payload)
    workflow = Workflow(client)
    workflow.submit(cast["eng"], name, version)
    workflow.approve(cast["doc"], name, version)
    workflow.approve(cast["eng2"], name, version)
    workflow.promote(cast["eng"], name, version, alias)
    return version


def copy_store(template: Path, home: Path) -> None:
    """Copy a pre-migrated MLflow SQLite store into ``home`` (migrating one takes seconds)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / "mlflow.db")
