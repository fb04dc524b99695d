"""RadGate's vocabulary in MLflow: the tag names it writes and reads, the status values, and the
artifact hash that ties a registered model version to the files that were reviewed.

Every package imports these names from here, so a tag is spelled once. Tags sit on model
versions (the registry: what the approval gate reads), on runs (training lineage and evidence)
or on both; the member's comment says where.

:func:`artifact_sha256` is the tree hash of a model directory (or one file): SHA-256 over the
sorted lines ``"<sha256 of file>  <posix relative path>\\n"`` of every regular file, except the
``registered_model_meta`` file MLflow writes at registration. Training records it at
registration (:attr:`Tag.ARTIFACT_SHA256`); the gate and serving recompute it at every load.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path

__all__ = ["PREFIX", "ModelStatus", "Tag", "artifact_files", "artifact_sha256"]

PREFIX = "radgate."


class Tag(StrEnum):
    """Tag names. ``*_PREFIX`` members are followed by a key (``f"{Tag.METRICS_PREFIX}auroc"``)."""

    # -- model versions: registration (training)
    STATUS = "radgate.status"  #: approval status; also written by the approval workflow
    ARTIFACT_SHA256 = "radgate.artifact_sha256"  #: :func:`artifact_sha256` at registration
    NETWORK = "radgate.network"
    LABEL_NAMES = "radgate.label_names"
    PREPROCESSING = "radgate.preprocessing"
    THRESHOLD = "radgate.threshold"
    RUN_ID = "radgate.run_id"
    METRICS_PREFIX = "radgate.metrics."
    #: ``classification`` or ``segmentation`` (versions registered before the tag: classification);
    #: model versions and runs.
    TASK = "radgate.task"
    #: The segmentation spec as JSON (segmentation versions).
    SEGMENTATION = "radgate.segmentation"
    #: The dataset version a model was trained on; model versions and runs.
    DATASET_VERSION = "radgate.dataset_version"

    # -- model versions: the approval workflow (governance.approvals)
    SUBMISSION = "radgate.submission"
    DECISION_PREFIX = "radgate.decision."
    ALIAS_PREFIX = "radgate.alias."

    # -- evidence read by the approval policy; model versions and runs
    SALIENCY_SANITY = "radgate.saliency_sanity"  #: ``passed`` | ``failed``
    SALIENCY_SANITY_METHOD = "radgate.saliency_sanity_method"
    SALIENCY_SANITY_THRESHOLD = "radgate.saliency_sanity_threshold"
    SALIENCY_SANITY_REASONS = "radgate.saliency_sanity_reasons"
    SALIENCY_SANITY_SPEARMAN = "radgate.saliency_randomization_spearman"
    DATASET_DEIDENTIFIED = "radgate.dataset.deidentified"  #: ``true`` | ``false``
    DATASET_DEIDENTIFIED_DETAIL = "radgate.dataset.deidentified.detail"

    # -- runs
    DATASET_NAME = "radgate.dataset_name"
    GIT_COMMIT = "radgate.git_commit"
    VERSION_PREFIX = "radgate.version."  #: library versions of the training run
    EVIDENCE = "radgate.evidence"
    DATASET_QUALITY = "radgate.dataset.quality"
    DATASET_QUALITY_WARNINGS = "radgate.dataset.quality_warnings"
    MONITORING_REFERENCE_PROFILE = "radgate.monitoring.reference_profile"
    RETRAIN_CHAMPION_VERSION = "radgate.retrain.champion_version"

    # -- erasure (imaging.compliance): model versions and runs that used an erased patient
    ERASURE_PREFIX = "radgate.erasure."
    ERASURE_REVIEW = "radgate.erasure.review"

    # -- experiments
    AUDIT_HEAD = "radgate.audit.head"  #: the audit log's head anchored in MLflow


class ModelStatus(StrEnum):
    """Values of :attr:`Tag.STATUS` written at registration (the workflow writes the checklist's)."""

    PENDING_REVIEW = "pending_review"


_UNHASHED = frozenset({"registered_model_meta"})
_CHUNK = 1 << 20


def artifact_files(path: Path) -> list[Path]:
    """The files :func:`artifact_sha256` hashes: ``path`` itself when it is a file, else every
    regular file below it (symbolic links and ``registered_model_meta`` left out), sorted.

    Raises :class:`FileNotFoundError` when ``path`` holds no file to hash.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        found = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        files = sorted(p for p in found if p.name not in _UNHASHED)
    if not files:
        raise FileNotFoundError(f"no artifact files under {path}")
    return files


def artifact_sha256(path: Path) -> str:
    """Tree hash of a model directory or a single file (see the module docstring).

    Raises :class:`FileNotFoundError` when ``path`` holds no file to hash.
    """
    path = Path(path)
    manifest = hashlib.sha256()
    for file in artifact_files(path):
        relative = file.name if file == path else file.relative_to(path).as_posix()
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        manifest.update(f"{digest.hexdigest()}  {relative}\n".encode())
    return manifest.hexdigest()
