"""Live profile: each served request's features, recorded in the catalog (no PHI).

Serving calls :meth:`LiveRecorder.record` once per request (or :func:`record_live_features`).
When the request's DICOM bytes are passed, they are sealed with serving's own key
(:mod:`serving.monitoring.sealing`: AES-GCM, the request id and record type as associated
data) under ``RADGATE_HOME/monitoring/pending/`` until feedback arrives or
``feedback.pending_input_hours`` pass; they are never stored in clear and never de-identified
unless a reviewer gives feedback and the monitoring config allows keeping inputs.

What the reviewer UI may show of a request (:func:`read_view`: the decision, the clinician
summary and, when the request asked for an explanation and the config keeps inputs, the overlay
PNG) is sealed the same way under ``monitoring/views/`` and purged at the same time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update

from governance.catalog import open_catalog, utcnow
from governance.keyring import StoreKey
from governance.settings import Settings, get_settings
from serving.monitoring.config import MonitoringConfig, load_monitoring_config
from serving.monitoring.models import LiveRecord
from serving.monitoring.sealing import (
    RECORD_INPUT,
    RECORD_VIEW,
    MonitoringError,
    check_request_id,
    pending_input_path,
    serving_key,
)
from serving.monitoring.sealing import view_path as _view_path
from training.reference_profile import ReferenceProfile, live_feature_row

__all__ = [
    "LiveRecorder",
    "MonitoringError",
    "pending_input_path",
    "purge_expired_inputs",
    "read_pending_input",
    "read_view",
    "record_live_features",
    "record_segmentation",
]


def _seal_to(path: Path, request_id: str, data: bytes, key: StoreKey, record: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sealed = key.seal(data, request_id.encode(), record=record)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(sealed)
    tmp.chmod(0o600)
    tmp.replace(path)


#: What the reviewer UI may show of a served request (the overlay only when inputs are kept).
_VIEW_KEYS = ("labels", "decision", "summary", "explanation", "study_instance_uid")


def _seal_view(
    request_id: str, view: Mapping[str, Any], *, keep: bool, settings: Settings, key: StoreKey
) -> None:
    """Seal the part of ``view`` the UI may show under ``monitoring/views/`` (:func:`read_view`)."""
    shown = {k: view[k] for k in _VIEW_KEYS if k in view and (keep or k != "explanation")}
    _seal_to(_view_path(request_id, settings), request_id, json.dumps(shown).encode(), key, RECORD_VIEW)


def _pseudonym_key_if_held(settings: Settings) -> Any:
    from governance.keys import KeyError_, load_project_key

    try:
        return load_project_key(settings, create=False)
    except KeyError_:
        return None


def read_view(request_id: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """What the UI may show of a served request (``labels``, ``decision``, ``summary``, ``explanation``:
    method and overlay ``png_base64``), or ``None`` when nothing was kept or it expired."""
    settings = settings or get_settings()
    path = _view_path(request_id, settings)
    if not path.exists():
        return None
    view: dict[str, Any] = json.loads(
        serving_key(settings).unseal(path.read_bytes(), request_id.encode(), record=RECORD_VIEW)
    )
    return view


def read_pending_input(request_id: str, settings: Settings | None = None) -> bytes | None:
    """The request's original input bytes, or ``None`` when none is kept (or it expired)."""
    settings = settings or get_settings()
    path = pending_input_path(request_id, settings)
    if not path.exists():
        return None
    return serving_key(settings).unseal(path.read_bytes(), request_id.encode(), record=RECORD_INPUT)


def discard_pending_input(request_id: str, settings: Settings | None = None) -> None:
    pending_input_path(request_id, settings).unlink(missing_ok=True)


def purge_expired_inputs(now: datetime | None = None, settings: Settings | None = None) -> int:
    """Delete sealed inputs whose feedback window has passed; returns how many went."""
    settings = settings or get_settings()
    now = now or utcnow()
    catalog = open_catalog(settings)
    with catalog.session() as session:
        expired = list(
            session.execute(
                select(LiveRecord.request_id).where(
                    LiveRecord.input_expires_at.is_not(None), LiveRecord.input_expires_at <= now
                )
            ).scalars()
        )
        for request_id in expired:
            discard_pending_input(request_id, settings)
            _view_path(request_id, settings).unlink(missing_ok=True)
        if expired:
            session.execute(
                update(LiveRecord).where(LiveRecord.request_id.in_(expired)).values(input_expires_at=None)
            )
    return len(expired)


def record_segmentation(
    request_id: str,
    *,
    model_name: str,
    model_version: str,
    structures: Sequence[Mapping[str, Any]],
    study_instance_uid: str | None = None,
    explanation: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    config: MonitoringConfig | None = None,
    at: datetime | None = None,
) -> None:
    """A served segmentation, listed in the reviewer UI's Cases like a classification.

    Its features are the structures' volumes (``structures``: ``name``, ``volume_ml``,
    ``voxels`` per structure, as :meth:`SegmentationResult.to_dict` gives them); it has no
    embedding and no score (the drift check compares classification profiles). The reviewer's
    view (sealed with serving's key, purged with the feedback window) names the structures found
    with their volumes, the study (for the viewer link) and, when the request asked for an
    explanation and the config keeps case images, the busiest slice's attribution PNG.
    """
    check_request_id(request_id)
    settings = settings or get_settings()
    config = config or load_monitoring_config()
    found = [s for s in structures if int(s.get("voxels", 0)) > 0]
    volumes = {str(s["name"]): round(float(s.get("volume_ml", 0.0)), 3) for s in structures}
    label = f"{len(found)} of {len(structures)} structures"
    summary = (
        "Segmented: " + ", ".join(f"{s['name']} {float(s['volume_ml']):.1f} ml" for s in found)
        if found
        else "No structure found in this series."
    )
    view: dict[str, Any] = {"summary": summary, "decision": {"label": label}, "labels": []}
    if study_instance_uid:
        view["study_instance_uid"] = study_instance_uid
    shown = explanation or {}
    if shown.get("slices"):  # the busiest slice's attribution
        view["explanation"] = {
            "method": f"{shown.get('method', 'attribution')} ({shown.get('structure', '')})",
            "png_base64": shown["slices"][0]["png_base64"],
        }
    keep = config.feedback.keep_inputs
    _seal_view(request_id, view, keep=keep, settings=settings, key=serving_key(settings))
    record = LiveRecord(
        request_id=request_id,
        model_name=model_name,
        model_version=model_version,
        created_at=at or utcnow(),
        features={"task": "segmentation", "volumes_ml": volumes},
        embedding=[],
        score=None,
        predicted_label=label[:64],
        input_expires_at=(at or utcnow()) + timedelta(hours=config.feedback.pending_input_hours),
    )
    with open_catalog(settings).session() as session:
        session.execute(delete(LiveRecord).where(LiveRecord.request_id == request_id))
        session.add(record)


class LiveRecorder:
    """Records requests served by one model version against its reference profile.

    Build one per loaded model (``LiveRecorder.for_run(name, version, run_id)``) and call
    :meth:`record` per request; thread-safe.
    """

    def __init__(
        self,
        model_name: str,
        model_version: str,
        profile: ReferenceProfile,
        *,
        config: MonitoringConfig | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_version = str(model_version)
        self.profile = profile
        self.config = config or load_monitoring_config()
        self.settings = settings or get_settings()
        self.catalog = open_catalog(self.settings)
        self.key = serving_key(self.settings)
        # The site label of drift subgroups is the de-identifier's keyed site pseudonym; only a
        # process that holds the pseudonym key computes it (elsewhere the site is "unknown").
        self.site_key = _pseudonym_key_if_held(self.settings)
        self._lock = threading.Lock()

    @classmethod
    def for_run(
        cls, model_name: str, model_version: str, run_id: str, *, tracking_uri: str | None = None
    ) -> LiveRecorder:
        """A recorder with the reference profile logged by the run that produced the version."""
        from training.reference_profile import load_reference_profile

        return cls(model_name, model_version, load_reference_profile(run_id, tracking_uri=tracking_uri))

    def record(
        self,
        request_id: str,
        image: np.ndarray,
        attributes: Mapping[str, Any],
        scores: Sequence[float],
        embedding: np.ndarray | Sequence[float],
        *,
        input_bytes: bytes | None = None,
        view: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Store one request's features; returns them.

        ``image``: the decoded pixel array after the modality LUT (``apply_modality_lut``);
        ``attributes``: :func:`training.reference_profile.attributes_from_dataset` of the request;
        ``scores``: class probabilities; ``embedding``: the full penultimate-layer vector
        (:func:`training.reference_profile.embed_and_score`); ``input_bytes``: the DICOM as
        received, sealed and kept only for possible feedback; ``view``: what the reviewer UI may
        show (serving's result: ``decision``, ``summary``, ``explanation``), sealed, its overlay
        kept only when the config keeps inputs.
        """
        check_request_id(request_id)
        row = live_feature_row(image, attributes, scores, self.profile.label_names)
        projected = self.profile.project(np.asarray(embedding, dtype=np.float64))[0]
        keep = self.config.feedback.keep_inputs
        if input_bytes is not None and keep:
            _seal_to(
                pending_input_path(request_id, self.settings), request_id, input_bytes, self.key, RECORD_INPUT
            )
        if view is not None:
            _seal_view(request_id, view, keep=keep, settings=self.settings, key=self.key)
        expires = None
        if (input_bytes is not None and keep) or view is not None:
            expires = (at or utcnow()) + timedelta(hours=self.config.feedback.pending_input_hours)
        record = LiveRecord(
            request_id=request_id,
            model_name=self.model_name,
            model_version=self.model_version,
            created_at=at or utcnow(),
            features=row,
            embedding=[float(v) for v in projected],
            score=row.get("score"),
            predicted_label=str(row["predicted_label"]),
            input_expires_at=expires,
        )
        with self._lock, self.catalog.session() as session:
            session.execute(delete(LiveRecord).where(LiveRecord.request_id == request_id))
            session.add(record)
        return row


def record_live_features(
    request_id: str,
    *,
    model_name: str,
    model_version: str,
    profile: ReferenceProfile,
    image: np.ndarray,
    attributes: Mapping[str, Any],
    scores: Sequence[float],
    embedding: np.ndarray | Sequence[float],
    input_bytes: bytes | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One-shot form of :meth:`LiveRecorder.record`."""
    recorder = LiveRecorder(model_name, model_version, profile)
    return recorder.record(request_id, image, attributes, scores, embedding, input_bytes=input_bytes, at=at)
