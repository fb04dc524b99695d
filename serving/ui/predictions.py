"""Recent predictions from serving, for the Cases page: what the monitoring store recorded per
served request (request id, model, version, time, predicted label, probability, whether feedback
exists) and, for one request, what serving kept for reviewers (:func:`serving.monitoring.live.
read_view`: the decision, the clinician summary and the explanation overlay when one was asked
for and kept). Nothing here is PHI: requests are named by serving's own random id."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from governance.catalog import open_catalog

__all__ = [
    "PAGE_SIZE",
    "Prediction",
    "PredictionPage",
    "UnknownPrediction",
    "load_prediction",
    "recent_predictions",
]

PAGE_SIZE = 20
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # DICOM UI grammar (PS3.5 9.1), at most 64 characters


class UnknownPrediction(LookupError):
    """No served request has this id."""


@dataclass(frozen=True)
class Prediction:
    request_id: str
    model: str
    version: str
    created_at: datetime
    predicted_label: str
    probability: float | None
    feedback: int  # how many reviewers gave feedback on it
    labels: list[str] = field(default_factory=list)
    #: What serving kept for reviewers (:func:`load_prediction` only).
    summary: str = ""
    decision: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    overlay_png: bytes | None = None
    study_instance_uid: str | None = None

    @property
    def has_overlay(self) -> bool:
        return self.overlay_png is not None

    def viewer_link(self, template: str | None) -> str | None:
        """The study in the site's viewer (``Settings.viewer_url``), when both are known; the UID
        is checked against the UI grammar and URL-quoted before it goes into the template."""
        from imaging.gateway.viewer import study_link

        uid = self.study_instance_uid
        if not template or not uid or not _UID.match(uid):
            return None
        return study_link(template, uid)


@dataclass(frozen=True)
class PredictionPage:
    items: list[Prediction]
    total: int
    page: int
    pages: int
    models: list[str]
    model: str | None


def recent_predictions(model: str | None = None, page: int = 1, per_page: int = PAGE_SIZE) -> PredictionPage:
    """Newest first, ``per_page`` a page (``page`` from 1), optionally one ``model``'s."""
    from serving.monitoring.models import FeedbackRecord, LiveRecord

    page = max(1, page)
    with open_catalog().session() as session:
        models = sorted(session.execute(select(LiveRecord.model_name).distinct()).scalars())
        model = model if model in models else None
        where = [LiveRecord.model_name == model] if model else []
        total = int(session.execute(select(func.count(LiveRecord.id)).where(*where)).scalar_one())
        pages = max(1, -(-total // per_page))
        page = min(page, pages)
        feedback = (
            select(FeedbackRecord.request_id, func.count(FeedbackRecord.id).label("n"))
            .group_by(FeedbackRecord.request_id)
            .subquery()
        )
        rows = session.execute(
            select(LiveRecord, feedback.c.n)
            .outerjoin(feedback, feedback.c.request_id == LiveRecord.request_id)
            .where(*where)
            .order_by(LiveRecord.created_at.desc(), LiveRecord.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        ).all()
        items = [_prediction(record, count or 0) for record, count in rows]
    return PredictionPage(items, total, page, pages, models, model)


def _prediction(record: Any, feedback: int, **view: Any) -> Prediction:
    return Prediction(
        request_id=record.request_id,
        model=record.model_name,
        version=record.model_version,
        created_at=record.created_at,
        predicted_label=record.predicted_label,
        probability=record.score,
        feedback=feedback,
        **view,
    )


def load_prediction(request_id: str) -> Prediction:
    """One served request with what serving kept for reviewers (raises :class:`UnknownPrediction`)."""
    from serving.monitoring.live import read_view
    from serving.monitoring.models import FeedbackRecord, LiveRecord

    if not _REQUEST_ID.match(request_id):
        raise UnknownPrediction("bad request id")
    with open_catalog().session() as session:
        record = session.execute(
            select(LiveRecord).where(LiveRecord.request_id == request_id)
        ).scalar_one_or_none()
        if record is None:
            raise UnknownPrediction("no served request has this id")
        count = session.execute(
            select(func.count(FeedbackRecord.id)).where(FeedbackRecord.request_id == request_id)
        ).scalar_one()
        view = read_view(request_id) or {}
        explanation = view.get("explanation") or {}
        try:
            png = base64.b64decode(explanation["png_base64"], validate=True) if explanation else None
        except (KeyError, binascii.Error, TypeError):
            png = None
        return _prediction(
            record,
            int(count),
            labels=[str(label) for label in view.get("labels") or []],
            summary=str(view.get("summary", "")),
            decision=dict(view.get("decision") or {}),
            method=explanation.get("method"),
            overlay_png=png if png and png[:8] == b"\x89PNG\r\n\x1a\n" else None,
            study_instance_uid=_uid_or_none(view.get("study_instance_uid")),
        )


def _uid_or_none(value: Any) -> str | None:
    text = str(value or "")
    return text if len(text) <= 64 and _UID.match(text) else None
