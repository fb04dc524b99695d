"""What serving does per request, as one function: DICOM bytes -> prediction + live record.

:func:`observe_dicom` is the reference implementation of the integration contract (and what
``radgate monitor replay`` uses to feed a model's live profile from files): decode, read the
kept attributes, run the model once for scores and the penultimate embedding, record.
:func:`ensure_reference_profile` computes and logs the reference profile of a registered version
whose training run did not (models trained before monitoring existed).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from serving.monitoring.live import LiveRecorder
from training.reference_profile import (
    ReferenceProfile,
    attributes_from_dataset,
    compute_reference_profile,
    embed_and_score,
    load_reference_profile,
    log_reference_profile,
)

__all__ = [
    "Observation",
    "ShiftKind",
    "ensure_reference_profile",
    "observe_dicom",
    "record_cases",
    "record_served",
    "shift_dicom",
]

LOGGER = logging.getLogger(__name__)


@dataclass
class Observation:
    request_id: str
    scores: list[float]
    predicted_label: str


def observe_dicom(
    model: Any,
    recorder: LiveRecorder,
    request_id: str,
    data: bytes,
    *,
    keep_input: bool = True,
    view: dict[str, Any] | None = None,
) -> Observation:
    """Predict one DICOM with a ``training.registry.LoadedModel`` and record its live features
    (``view``: serving's result for the request, what the reviewer UI may show of it)."""
    probs, embedding = embed_and_score(model.module, model.preprocess(data))
    row = record_served(
        recorder, request_id, data, probs[0].tolist(), embedding[0], keep_input=keep_input, view=view
    )
    return Observation(request_id, [float(p) for p in probs[0]], str(row["predicted_label"]))


def record_served(
    recorder: LiveRecorder,
    request_id: str,
    data: bytes,
    scores: list[float],
    embedding: np.ndarray,
    *,
    keep_input: bool = True,
    view: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record one request whose scores and penultimate embedding the serving forward pass already
    computed (no second forward): only the header and pixel features are read here."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(io.BytesIO(data))
    image = np.asarray(apply_modality_lut(ds.pixel_array, ds))
    attributes = attributes_from_dataset(ds, recorder.site_key)
    if view is not None and ds.get("StudyInstanceUID"):
        # the reviewer UI links the case to its study in the site's viewer (RADGATE_VIEWER_URL)
        view = {**view, "study_instance_uid": str(ds.StudyInstanceUID)}
    return recorder.record(
        request_id,
        image,
        attributes,
        scores,
        embedding,
        input_bytes=data if keep_input else None,
        view=view,
    )


def ensure_reference_profile(
    ref: str, *, tracking_uri: str | None = None, recompute: bool = False
) -> tuple[ReferenceProfile, bool]:
    """The profile of model version ``ref`` (``NAME/VERSION`` or ``NAME@ALIAS``); computed from the
    train split of its dataset version and logged to its run when missing. Returns (profile, computed)."""
    from imaging.datasets import get_dataset, materialize
    from training.registry import load_model

    model = load_model(ref, tracking_uri=tracking_uri)
    if model.run_id is None:
        raise LookupError(f"{ref} has no training run to hold a reference profile")
    if not recompute:
        try:
            return load_reference_profile(model.run_id, tracking_uri=tracking_uri), False
        except FileNotFoundError:
            pass
    if model.dataset_version is None:
        raise LookupError(f"{ref} names no dataset version")
    rows = materialize(get_dataset(model.dataset_version), "train")
    profile = compute_reference_profile(
        model.module, rows, model.preprocessing, label_names=model.label_names
    )
    log_reference_profile(model.run_id, profile, tracking_uri=tracking_uri)
    return profile, True


class ShiftKind(StrEnum):
    """Synthetic shifts for demos and tests."""

    NONE = "none"
    INTENSITY = "intensity"  # a contrast/gain change: pixel values x 1.6 (clipped to the bit depth)
    MANUFACTURER = "manufacturer"  # a new scanner vendor and model in the header


def shift_dicom(data: bytes, kind: ShiftKind | str) -> bytes:
    """The DICOM ``data`` with a synthetic acquisition shift applied."""
    import pydicom

    kind = ShiftKind(kind)
    if kind is ShiftKind.NONE:
        return data
    ds = pydicom.dcmread(io.BytesIO(data))
    if kind is ShiftKind.INTENSITY:
        pixels = ds.pixel_array.astype(np.float64) * 1.6
        limit = 2 ** int(ds.BitsStored) - 1
        ds.PixelData = np.clip(pixels, 0, limit).astype(ds.pixel_array.dtype).tobytes()
    else:
        ds.Manufacturer = "NOVAVISION"
        ds.ManufacturerModelName = "NV-9000"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def record_cases(
    recorder: LiveRecorder,
    cases: Iterable[tuple[str, bytes, dict[str, Any], np.ndarray | None]],
    model: Callable[[], Any],
) -> None:
    """Record served requests ``(request_id, dicom_bytes, result, embedding)``: with the embedding
    the served forward pass gave (:func:`record_served`), or without one (e.g. Triton) by a
    forward pass of ``model()`` here (:func:`observe_dicom`). A failure is logged per request,
    never raised: monitoring must not stop serving."""
    for request_id, data, result, embedding in cases:
        try:
            if embedding is None:
                observe_dicom(model(), recorder, request_id, data, view=result)
            else:
                record_served(recorder, request_id, data, result["probabilities"], embedding, view=result)
        except Exception as exc:
            LOGGER.warning("live features not recorded (%s)", type(exc).__name__)
