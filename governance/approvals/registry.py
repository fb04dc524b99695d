"""MLflow registry access for governance: clients, artifact hashing, evidence gathering.

MLflow OSS has no approval workflow, so RadGate keeps decisions in its audit log (the
authority) and mirrors them as model-version tags (``radgate.*``) for the MLflow UI. A tag
that no authentic audit entry backs is reported, never trusted.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from governance.audit import AuditEntry, AuditLog
from governance.auth.roles import Role
from governance.policy import Decision, DecisionKind, Evidence, Submission
from governance.settings import get_settings
from governance.tags import Tag
from governance.tags import artifact_sha256 as tree_sha256

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "DECISION_ACTIONS",
    "TAG_ALIAS_PREFIX",
    "TAG_ARTIFACT_SHA256",
    "TAG_DECISION_PREFIX",
    "TAG_STATUS",
    "TAG_SUBMISSION",
    "RegistryError",
    "artifact_location",
    "artifact_sha256",
    "bound_registry_http",
    "gather_evidence",
    "hash_artifact",
    "hash_tree",
    "model_target",
    "registry_client",
]

TAG_STATUS = Tag.STATUS
TAG_SUBMISSION = Tag.SUBMISSION
TAG_ARTIFACT_SHA256 = Tag.ARTIFACT_SHA256
TAG_DECISION_PREFIX = Tag.DECISION_PREFIX
TAG_ALIAS_PREFIX = Tag.ALIAS_PREFIX
DECISION_ACTIONS = {f"model.{k.value}": k for k in DecisionKind}


class RegistryError(RuntimeError):
    """The registered model, version or its artifact could not be read."""


#: MLflow's HTTP limits for a process whose requests wait on the gate (MLflow's own defaults,
#: 7 retries with backoff factor 2 and a 120 s timeout, hold a decision against a registry that
#: is down for about four minutes; these fail it closed within seconds).
REQUEST_PATH_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # an integer in MLflow
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def bound_registry_http() -> None:
    """Bound MLflow's HTTP retries and timeout in this process (:data:`REQUEST_PATH_HTTP`),
    unless the operator set them: for services that ask the gate on their request path. The
    limits are process-wide environment variables, MLflow's only setting for them."""
    import os

    for name, value in REQUEST_PATH_HTTP.items():
        os.environ.setdefault(name, value)


def registry_client(uri: str | None = None) -> MlflowClient:
    from mlflow import MlflowClient

    uri = uri or get_settings().resolved_mlflow_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_target(name: str, version: str | int) -> str:
    """How audit entries name a model version."""
    return f"model:{name}/{version}"


def hash_tree(path: Path) -> str:
    """The artifact hash (:func:`governance.tags.artifact_sha256`) of a file or directory, the
    same value training records in the ``radgate.artifact_sha256`` tag at registration."""
    try:
        return tree_sha256(path)
    except FileNotFoundError:
        raise RegistryError("artifact is empty or missing") from None


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    return None


def artifact_location(client: MlflowClient, name: str, version: str | int) -> Path | str:
    """Where the version's artifact is stored: a local path (that exists), or the URI it is
    downloaded from."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    try:
        # From the registry client: MlflowClient's own method first reads the whole registered
        # model (every latest version, its tags and aliases) only to refuse a prompt, which
        # reading the version itself refuses (get_model_version, get_model_version_by_alias).
        uri = client._get_registry_client().get_model_version_download_uri(name, str(version))
        if RunsArtifactRepository.is_runs_uri(uri):
            uri = RunsArtifactRepository.get_underlying_uri(uri, client.tracking_uri)
    except MlflowException as exc:
        raise RegistryError(f"cannot read the artifact of {name} v{version}: {exc.message}") from exc
    local = _local_path(uri)
    if local is None:
        return uri
    if not local.exists():
        raise RegistryError(f"artifact of {name} v{version} is missing")
    return local


def hash_artifact(client: MlflowClient, name: str, version: str | int, location: Path | str) -> str:
    """The hash of the artifact at ``location`` (:func:`artifact_location`), every byte read: a
    remote one is downloaded first; a local one's hash is recorded for later processes
    (:mod:`governance.approvals.digests`)."""
    from mlflow.exceptions import MlflowException

    from governance.approvals.digests import hash_and_record

    try:
        if isinstance(location, Path):
            try:
                return hash_and_record(location)
            except FileNotFoundError:
                raise RegistryError("artifact is empty or missing") from None
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix="radgate-hash-") as tmp:
            fetched = mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=tmp, tracking_uri=client.tracking_uri
            )
            return hash_tree(Path(fetched))
    except MlflowException as exc:
        raise RegistryError(f"cannot read the artifact of {name} v{version}: {exc.message}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot read the artifact of {name} v{version}: {exc.strerror}") from exc


def artifact_sha256(client: MlflowClient, name: str, version: str | int) -> str:
    """The hash of the version's artifact as stored now (downloaded first if remote)."""
    return hash_artifact(client, name, version, artifact_location(client, name, version))


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"no registered model version {name} v{version}") from exc


def _metrics(client: MlflowClient, mv: ModelVersion) -> tuple[dict[str, float], dict[str, str]]:
    metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    from mlflow.exceptions import MlflowException

    model_id = getattr(mv, "model_id", None)
    if model_id:
        try:
            logged = client.get_logged_model(model_id)
            for metric in logged.metrics or []:
                metrics.setdefault(metric.key, float(metric.value))
            run_tags.update(logged.tags or {})
        except MlflowException:  # a logged model is optional evidence
            pass
    if mv.run_id:
        run = client.get_run(mv.run_id)
        metrics.update({k: float(v) for k, v in run.data.metrics.items()})
        run_tags = {**run_tags, **run.data.tags}
    return metrics, run_tags


def _at(entry: AuditEntry) -> datetime:
    return datetime.fromisoformat(entry.ts)


def _tag_decisions(mv: ModelVersion) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key, value in (mv.tags or {}).items():
        if key.startswith(TAG_DECISION_PREFIX):
            try:
                found[key] = json.loads(value)
            except ValueError:
                found[key] = {}
    return found


def gather_evidence(
    client: MlflowClient,
    audit: AuditLog,
    name: str,
    version: str | int,
    *,
    with_hash: bool = True,
    strict: bool = False,
    model_version: ModelVersion | None = None,
) -> tuple[Evidence, ModelVersion]:
    """Collect what the policy needs for one version (``model_version``: the registry's entry
    for it, when the caller has just read it, e.g. by its alias; else it is read here).

    Decisions and the submission come from authentic audit entries for the version; a
    ``radgate.decision.*`` tag without a matching authentic entry becomes an unconfirmed
    decision (the checklist fails on it). With ``strict`` (the gate) an entry that is not
    authentic raises :class:`RegistryError` instead of being skipped: a tampered revocation
    must deny, not vanish.
    """
    if model_version is not None and str(model_version.version) != str(version):
        raise ValueError(f"model_version is v{model_version.version}, not v{version}")
    mv = model_version if model_version is not None else get_version(client, name, version)
    target = model_target(name, mv.version)
    entries = audit.entries(target=target, actions=["model.submit", *DECISION_ACTIONS])
    submission: Submission | None = None
    decisions: list[Decision] = []
    backed: set[str] = set()
    submitters: set[str] = set()
    for entry in entries:
        if not audit.authentic(entry):
            if strict:
                raise RegistryError(f"audit entry {entry.seq} for {target} is not signed by the audit writer")
            continue
        details = entry.details
        if entry.action == "model.submit":
            submission = Submission(entry.actor, _at(entry), str(details.get("artifact_sha256", "")))
            submitters.add(entry.actor)
            continue
        try:
            role = Role(entry.role)
        except ValueError:
            continue
        kind = DECISION_ACTIONS[entry.action]
        decisions.append(
            Decision(entry.seq, kind, entry.actor, role, _at(entry), str(details.get("artifact_sha256", "")))
        )
        backed.add(f"{TAG_DECISION_PREFIX}{entry.seq:010d}")
    for key, value in _tag_decisions(mv).items():
        if key in backed:
            continue
        try:
            seq = int(key.removeprefix(TAG_DECISION_PREFIX))
            kind = DecisionKind(value.get("decision", ""))
            role = Role(value.get("role", ""))
            at = datetime.fromisoformat(value.get("at", ""))
        except (ValueError, TypeError):
            seq, kind, role, at = 0, DecisionKind.APPROVE, Role.ADMIN, datetime.fromtimestamp(0)
        decisions.append(
            Decision(
                seq,
                kind,
                str(value.get("actor", "?")),
                role,
                at,
                str(value.get("artifact_sha256", "")),
                confirmed=False,
            )
        )
    metrics, run_tags = _metrics(client, mv)
    tags = {**run_tags, **(mv.tags or {})}
    current = None
    if with_hash:
        try:
            current = artifact_sha256(client, name, mv.version)
        except RegistryError:
            current = None
    evidence = Evidence(
        name, str(mv.version), current, submission, decisions, metrics, tags, frozenset(submitters)
    )
    return evidence, mv
