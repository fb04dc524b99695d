"""Clinician feedback on served requests, and feedback turned into the next dataset's labels.

* :func:`submit_feedback` (and ``POST /v1/feedback`` from :func:`feedback_router`): a clinical
  reviewer agrees or disagrees with a prediction, with a corrected label and a comment. When the
  monitoring config keeps inputs and serving sealed the request's DICOM, it goes through the
  standard ingest pipeline (de-identified, stored by content hash, lineage recorded) and the
  feedback row keeps only the de-identified instance's sha256. The comment is sealed with the
  serving store key (free text may name a patient); the audit entry holds the verdict, the label and
  hashes, never the comment.
* :func:`export_feedback_labels`: a labels CSV ``sha256,label`` (keys: de-identified content
  hashes) that ``radgate dataset create NAME LABELS.csv`` accepts.
* :func:`feedback_dataset`: the base dataset version's labels plus the feedback labels (feedback
  wins) as a new dataset version.
"""

import csv
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from governance.audit import record
from governance.auth import Principal, Role
from governance.catalog import open_catalog, utcnow
from governance.settings import Settings, get_settings
from governance.tags import Tag
from serving.monitoring.alerts import FEEDBACK_TOTAL
from serving.monitoring.config import MonitoringConfig, load_monitoring_config
from serving.monitoring.live import MonitoringError, discard_pending_input, read_pending_input
from serving.monitoring.models import FeedbackRecord, LiveRecord
from serving.monitoring.sealing import RECORD_FEEDBACK, serving_key

__all__ = [
    "FEEDBACK_ROLES",
    "ExportReport",
    "FeedbackIn",
    "FeedbackOut",
    "InputStatus",
    "InvalidFeedback",
    "UnknownRequest",
    "export_feedback_labels",
    "feedback_dataset",
    "feedback_router",
    "submit_feedback",
]

FEEDBACK_ROLES = (Role.CLINICAL_REVIEWER,)
_LABEL_PATTERN = r"^[A-Za-z0-9_. -]{1,64}$"


class UnknownRequest(MonitoringError):
    """No recorded request has this id."""


class InvalidFeedback(MonitoringError):
    """The feedback cannot apply to this request (e.g. a label the model does not know)."""


class InputStatus(StrEnum):
    KEPT = "kept"  # de-identified and stored; instance_sha256 set
    DUPLICATE = "duplicate"  # the same input was already stored; instance_sha256 set
    QUARANTINED = "quarantined"  # the standard pipeline could not de-identify it safely
    NOT_AVAILABLE = "not_available"  # serving kept no input, or it expired
    NOT_KEPT_BY_POLICY = "not_kept_by_policy"


class FeedbackIn(BaseModel):
    """Body of ``POST /v1/feedback``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$", description="id serving returned")
    agree: bool = Field(description="true: the prediction is right")
    corrected_label: str | None = Field(
        None, pattern=_LABEL_PATTERN, description="the right label (required when agree is false)"
    )
    comment: str | None = Field(None, max_length=2000, description="free text; stored sealed")

    @field_validator("comment")
    @classmethod
    def _blank(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None


class FeedbackOut(BaseModel):
    feedback_id: int
    request_id: str
    model: str
    model_version: str
    label: str
    input_status: InputStatus
    instance_sha256: str | None


def _label_names(model: str, version: str, settings: Settings) -> list[str] | None:
    from serving.monitoring.job import _profile, _run_id

    try:
        tracking_uri = settings.resolved_mlflow_uri
        return _profile(_run_id(model, version, tracking_uri), tracking_uri).label_names
    except (MonitoringError, FileNotFoundError, LookupError):
        return None


def _keep_input(
    request_id: str, config: MonitoringConfig, settings: Settings
) -> tuple[InputStatus, str | None]:
    if not config.feedback.keep_inputs:
        discard_pending_input(request_id, settings)
        return InputStatus.NOT_KEPT_BY_POLICY, None
    data = read_pending_input(request_id, settings)
    if data is None:
        return InputStatus.NOT_AVAILABLE, None
    from imaging.ingest import Ingestor, IngestStatus

    outcome = Ingestor(settings, profile=config.feedback.deid_profile).ingest_bytes(data, source="feedback")
    discard_pending_input(request_id, settings)
    if outcome.status is IngestStatus.QUARANTINED:
        return InputStatus.QUARANTINED, None
    status = InputStatus.KEPT if outcome.status is IngestStatus.DEIDENTIFIED else InputStatus.DUPLICATE
    return status, outcome.output_sha256


def submit_feedback(
    principal: Principal,
    body: FeedbackIn,
    *,
    config: MonitoringConfig | None = None,
    settings: Settings | None = None,
) -> FeedbackOut:
    """Store a reviewer's feedback (one per reviewer and request; a second one replaces it)."""
    from governance.auth import require_role

    require_role(principal, *FEEDBACK_ROLES)
    config = config or load_monitoring_config()
    settings = settings or get_settings()
    catalog = open_catalog(settings)
    with catalog.session() as session:
        live = session.execute(
            select(LiveRecord).where(LiveRecord.request_id == body.request_id)
        ).scalar_one_or_none()
    if live is None:
        raise UnknownRequest("no served request has this id")
    if not body.agree and not body.corrected_label:
        raise InvalidFeedback("corrected_label is required when agree is false")
    label = live.predicted_label if body.agree else str(body.corrected_label)
    names = _label_names(live.model_name, live.model_version, settings)
    if names is not None and label not in names:
        raise InvalidFeedback(f"label must be one of: {', '.join(names)}")
    status, instance = _keep_input(body.request_id, config, settings)
    sealed = (
        serving_key(settings).seal(body.comment.encode(), body.request_id.encode(), record=RECORD_FEEDBACK)
        if body.comment
        else None
    )
    with catalog.session() as session:
        row = session.execute(
            select(FeedbackRecord).where(
                FeedbackRecord.request_id == body.request_id, FeedbackRecord.reviewer == principal.name
            )
        ).scalar_one_or_none()
        if row is None:
            row = FeedbackRecord(request_id=body.request_id, reviewer=principal.name)
            session.add(row)
        row.model_name, row.model_version = live.model_name, live.model_version
        row.agree, row.predicted_label, row.label = body.agree, live.predicted_label, label
        row.comment_sealed = sealed
        if instance is not None or row.instance_sha256 is None:
            row.instance_sha256 = instance
            row.input_status = str(status)
        row.created_at = utcnow()
        session.flush()
        out = FeedbackOut(
            feedback_id=row.id,
            request_id=row.request_id,
            model=row.model_name,
            model_version=row.model_version,
            label=row.label,
            input_status=InputStatus(row.input_status),
            instance_sha256=row.instance_sha256,
        )
    record(
        principal.name,
        "monitoring.feedback",
        f"model:{live.model_name}/{live.model_version}",
        {
            "request_id": body.request_id,
            "agree": body.agree,
            "label": label,
            "predicted_label": live.predicted_label,
            "input_status": str(out.input_status),
            "instance_sha256": out.instance_sha256,
            "comment_chars": len(body.comment or ""),
        },
        role=str(principal.role),
    )
    FEEDBACK_TOTAL.labels(live.model_name, "agree" if body.agree else "disagree").inc()
    from serving.interop import record_review

    # The EMR's DiagnosticReport of this result (if one was sent) becomes final with the decision.
    try:
        record_review(body.request_id, body.agree, label)
    except (OSError, ValueError) as exc:  # the feedback is stored either way
        import logging

        logging.getLogger(__name__).warning("FHIR report not updated: %s", type(exc).__name__)
    return out


def feedback_router(*, settings_factory: Callable[[], Settings] | None = None) -> Any:
    """A FastAPI ``APIRouter`` with ``POST /v1/feedback`` (clinical-reviewer role; 201).

    401 without a valid token, 403 for other roles, 404 for an unknown request id, 422 for an
    invalid body or label.
    """
    from fastapi import APIRouter, Depends, HTTPException, status

    from governance.auth import fastapi_dependency

    router = APIRouter(tags=["feedback"])

    @router.post("/v1/feedback", status_code=status.HTTP_201_CREATED, response_model=FeedbackOut)
    def post_feedback(
        body: FeedbackIn, principal: Principal = Depends(fastapi_dependency(*FEEDBACK_ROLES))
    ) -> FeedbackOut:
        """Feedback on a served prediction: agree or disagree, corrected label, comment."""
        settings = settings_factory() if settings_factory else get_settings()
        try:
            return submit_feedback(principal, body, settings=settings)
        except UnknownRequest as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except InvalidFeedback as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from exc

    return router


@dataclass
class ExportReport:
    path: Path
    rows: int
    without_input: int
    conflicts: int


def _feedback_labels(
    model: str, since: datetime | None, settings: Settings
) -> tuple[dict[str, str], int, int]:
    """sha256 -> label from feedback (latest per reviewer; reviewers who disagree: left out)."""
    with open_catalog(settings).session() as session:
        query = select(FeedbackRecord).where(FeedbackRecord.model_name == model)
        if since is not None:
            query = query.where(FeedbackRecord.created_at >= since)
        rows = list(session.execute(query.order_by(FeedbackRecord.created_at)).scalars())
    labels: dict[str, set[str]] = {}
    without_input = 0
    for row in rows:
        if row.instance_sha256 is None:
            without_input += 1
            continue
        labels.setdefault(row.instance_sha256, set()).add(row.label)
    conflicts = sum(1 for values in labels.values() if len(values) > 1)
    return {k: next(iter(v)) for k, v in labels.items() if len(v) == 1}, without_input, conflicts


def _write_csv(path: Path, labels: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sha256", "label"])
        for sha256, label in sorted(labels.items()):
            writer.writerow([sha256, label])


def export_feedback_labels(
    model: str, out: Path, *, since: datetime | None = None, settings: Settings | None = None
) -> ExportReport:
    """Write the feedback labels of ``model`` as ``sha256,label`` (de-identified keys only)."""
    settings = settings or get_settings()
    labels, without_input, conflicts = _feedback_labels(model, since, settings)
    if not labels:
        raise MonitoringError(f"no feedback with a kept input for model {model!r}")
    _write_csv(out, labels)
    return ExportReport(out, len(labels), without_input, conflicts)


def feedback_dataset(
    model: str,
    name: str,
    *,
    base: str | None = None,
    since: datetime | None = None,
    seed: int = 0,
    hold_out: str | None = None,
    settings: Settings | None = None,
) -> Any:
    """A new dataset version: ``base`` (default: the dataset the model's latest served version was
    trained on) relabelled and extended with the feedback labels. Returns ``CreateReport``.

    ``hold_out="test"`` leaves the base's test split out of the new version, with every feedback
    case of a patient in it, so that split stays a fixed, unseen test set for champion/challenger
    comparisons (a new version re-splits its patients: kept in, they could land in train).
    """
    from governance.catalog import Instance
    from imaging.datasets import create_dataset, get_dataset

    settings = settings or get_settings()
    labels, _, _ = _feedback_labels(model, since, settings)
    if not labels:
        raise MonitoringError(f"no feedback with a kept input for model {model!r}")
    if base is None:
        base = _served_dataset(model, settings)
    previous = get_dataset(base, settings)
    names = list(previous.manifest.label_names)
    items = previous.manifest.items
    if hold_out is not None:
        held = {i.patient for i in items if str(i.split) == hold_out}
        items = [i for i in items if i.patient not in held]
        with open_catalog(settings).session() as session:
            found = session.execute(
                select(Instance.sha256, Instance.patient_pseudonym).where(Instance.sha256.in_(list(labels)))
            )
            patients = {sha256: patient for sha256, patient in found}
        labels = {k: v for k, v in labels.items() if patients.get(k) not in held}
        if not labels:
            raise MonitoringError("every feedback case belongs to a held-out patient")
    merged = {item.sha256: names[item.label] for item in items}
    merged.update(labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        _write_csv(path, merged)
        return create_dataset(
            name,
            path,
            split=previous.manifest.split,
            group_by=previous.manifest.group_by,
            seed=seed,
            label_names=names,
            settings=settings,
        )


def _served_dataset(model: str, settings: Settings) -> str:
    from training.registry import resolve_model_version

    with open_catalog(settings).session() as session:
        version = session.execute(
            select(LiveRecord.model_version)
            .where(LiveRecord.model_name == model)
            .order_by(LiveRecord.created_at.desc())
            .limit(1)
        ).scalar_one_or_none()
    if version is None:
        raise MonitoringError(f"model {model!r} has served no request; pass --base")
    mv = resolve_model_version(f"{model}/{version}", tracking_uri=settings.resolved_mlflow_uri)
    dataset = (mv.tags or {}).get(Tag.DATASET_VERSION)
    if not dataset:
        raise MonitoringError(f"model {model} version {version} names no dataset; pass --base")
    return str(dataset)
