"""Reference profile of a model's training data, computed at training time and logged with the run.

What drift monitoring (``serving.monitoring``) compares live requests against. One profile per
training run, stored as the MLflow artifact ``monitoring/reference_profile.json`` of the run that
produced the model version (tag ``radgate.monitoring.reference_profile`` on the run):

* continuous features, one value per image: intensity summaries of the decoded pixel array after
  the modality LUT (``intensity_mean``, ``intensity_std``, ``intensity_p05``/``p50``/``p95``),
  size (``rows``, ``columns``), ``pixel_spacing`` (mm) and ``kvp`` when the header has them, and
  the positive-class ``score``; a seeded subsample of at most ``max_samples`` values is kept for
  two-sample tests, plus summaries;
* categorical features: counts of the acquisition attributes kept by de-identification
  (``manufacturer``, ``manufacturer_model``, ``body_part``, ``site`` pseudonym, ``modality``) and
  of ``predicted_label``;
* an embedding: the penultimate layer's activations (input of the network's last ``Linear``),
  reduced by PCA fitted on the training split to ``embedding_dims`` dimensions; the PCA mean and
  components travel with the profile so live embeddings are projected the same way.

No PHI: nothing here names a patient, study or instance. The training owner calls
``log_reference_profile(run_id, compute_reference_profile(network, rows["train"], spec, ...))``
after fitting; serving reads it back with :func:`load_reference_profile`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from governance.tags import Tag
from training.preprocess import IMAGE_KEY, PreprocessingSpec

__all__ = [
    "CATEGORICAL_FEATURES",
    "CONTINUOUS_FEATURES",
    "PROFILE_ARTIFACT",
    "PROFILE_TAG",
    "FeatureKind",
    "ReferenceProfile",
    "attributes_from_dataset",
    "compute_reference_profile",
    "embed_and_score",
    "image_features",
    "live_feature_row",
    "load_reference_profile",
    "log_reference_profile",
]

PROFILE_ARTIFACT = "monitoring/reference_profile.json"
PROFILE_TAG = Tag.MONITORING_REFERENCE_PROFILE
PROFILE_FORMAT = 1


class FeatureKind(StrEnum):
    CONTINUOUS = "continuous"
    CATEGORICAL = "categorical"
    EMBEDDING = "embedding"


CONTINUOUS_FEATURES = (
    "intensity_mean",
    "intensity_std",
    "intensity_p05",
    "intensity_p50",
    "intensity_p95",
    "rows",
    "columns",
    "pixel_spacing",
    "kvp",
    "score",
)
CATEGORICAL_FEATURES = (
    "manufacturer",
    "manufacturer_model",
    "body_part",
    "site",
    "modality",
    "predicted_label",
)
_ATTRIBUTE_FEATURES = ("manufacturer", "manufacturer_model", "body_part", "site", "modality")


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def image_features(image: np.ndarray) -> dict[str, float]:
    """Intensity summaries of one decoded image (pixel values after the modality LUT)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("empty image")
    p05, p50, p95 = np.percentile(values, [5, 50, 95])
    shape = np.asarray(image).shape
    return {
        "intensity_mean": float(values.mean()),
        "intensity_std": float(values.std()),
        "intensity_p05": float(p05),
        "intensity_p50": float(p50),
        "intensity_p95": float(p95),
        "rows": float(shape[-2]) if len(shape) >= 2 else float(values.size),
        "columns": float(shape[-1]) if len(shape) >= 2 else 1.0,
    }


def attributes_from_dataset(ds: Any, key: Any | None = None) -> dict[str, Any]:
    """The acquisition attributes de-identification keeps, read from a pydicom Dataset.

    ``site`` is the same keyed pseudonym the de-identifier records (``Pseudonymizer.site``) when
    ``key`` (a :class:`governance.keys.ProjectKey`) is given and the header still names the
    institution; a de-identified header gives ``unknown``. Plus ``kvp`` and ``pixel_spacing``.
    """

    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "").strip()

    site = "unknown"
    if key is not None and text("InstitutionName"):
        from imaging.deid.pseudonym import Pseudonymizer

        site = Pseudonymizer(key).site(text("InstitutionName"))
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return {
        "modality": text("Modality") or "unknown",
        "manufacturer": text("Manufacturer") or "unknown",
        "manufacturer_model": text("ManufacturerModelName") or "unknown",
        "site": site,
        "body_part": text("BodyPartExamined").upper() or "unknown",
        "kvp": _number(ds.get("KVP")),
        "pixel_spacing": _number(spacing),
    }


def live_feature_row(
    image: np.ndarray,
    attributes: Mapping[str, Any],
    scores: Sequence[float],
    label_names: Sequence[str],
) -> dict[str, Any]:
    """One request's (or training image's) feature values, no PHI: see the module docstring."""
    row: dict[str, Any] = dict(image_features(image))
    row["pixel_spacing"] = _number(attributes.get("pixel_spacing"))
    row["kvp"] = _number(attributes.get("kvp"))
    for name in _ATTRIBUTE_FEATURES:
        row[name] = str(attributes.get(name) or "unknown")
    probs = [float(s) for s in scores]
    positive = 1 if len(probs) == 2 else len(probs) - 1
    row["score"] = probs[positive] if probs else None
    best = int(np.argmax(probs)) if probs else -1
    row["predicted_label"] = str(label_names[best]) if 0 <= best < len(label_names) else str(best)
    return row


def _last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("the network has no Linear layer to take a penultimate embedding from")
    return linears[-1]


@torch.no_grad()
def embed_and_score(module: torch.nn.Module, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, C]`` and penultimate-layer embeddings ``[N, D]`` in one forward.

    The embedding is the input of the network's last ``torch.nn.Linear`` (MONAI DenseNet,
    ResNet and EfficientNet all end in one), captured with a forward hook.
    """
    captured: list[torch.Tensor] = []
    handle = _last_linear(module).register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().flatten(1))
    )
    parameter = next(iter(module.parameters()), None)
    try:
        logits = module(batch.to(parameter.device) if parameter is not None else batch)
    finally:
        handle.remove()
    probs = torch.softmax(logits, dim=1).cpu().numpy()
    return probs, captured[-1].cpu().numpy()


@dataclass
class ReferenceProfile:
    """The training-time distribution of every monitored feature (JSON round-trips)."""

    label_names: list[str]
    continuous: dict[str, list[float]]
    categorical: dict[str, dict[str, int]]
    embedding_mean: list[float]
    embedding_components: list[list[float]]
    embedding_reference: list[list[float]]
    n_images: int
    summaries: dict[str, dict[str, float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_dims(self) -> int:
        return len(self.embedding_components)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Full penultimate embeddings ``[N, D]`` (or ``[D]``) -> the profile's PCA space ``[N, k]``."""
        data = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        mean = np.asarray(self.embedding_mean)
        if data.shape[1] != mean.size:
            raise ValueError(f"embedding has {data.shape[1]} dimensions; the profile expects {mean.size}")
        return (data - mean) @ np.asarray(self.embedding_components).T

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "label_names": self.label_names,
            "n_images": self.n_images,
            "continuous": self.continuous,
            "categorical": self.categorical,
            "summaries": self.summaries,
            "embedding": {
                "mean": self.embedding_mean,
                "components": self.embedding_components,
                "reference": self.embedding_reference,
            },
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        embedding = data["embedding"]
        return cls(
            label_names=[str(v) for v in data["label_names"]],
            continuous={k: [float(x) for x in v] for k, v in data["continuous"].items()},
            categorical={k: {str(c): int(n) for c, n in v.items()} for k, v in data["categorical"].items()},
            embedding_mean=[float(x) for x in embedding["mean"]],
            embedding_components=[[float(x) for x in row] for row in embedding["components"]],
            embedding_reference=[[float(x) for x in row] for row in embedding["reference"]],
            n_images=int(data["n_images"]),
            summaries=dict(data.get("summaries", {})),
            meta=dict(data.get("meta", {})),
        )


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"n": 0.0}
    q = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "n": float(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p05": float(q[0]),
        "p25": float(q[1]),
        "p50": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
    }


def profile_from_rows(
    rows: Sequence[Mapping[str, Any]],
    embeddings: np.ndarray,
    label_names: Sequence[str],
    *,
    max_samples: int = 2000,
    embedding_dims: int = 8,
    seed: int = 0,
) -> ReferenceProfile:
    """Build a profile from feature rows (:func:`live_feature_row`) and full embeddings ``[N, D]``."""
    if not rows:
        raise ValueError("a reference profile needs at least one image")
    rng = np.random.default_rng(seed)
    keep = np.arange(len(rows))
    if len(rows) > max_samples:
        keep = np.sort(rng.choice(len(rows), size=max_samples, replace=False))
    continuous: dict[str, list[float]] = {}
    summaries: dict[str, dict[str, float]] = {}
    for name in CONTINUOUS_FEATURES:
        values = [rows[int(i)].get(name) for i in keep]
        present = np.array([float(v) for v in values if v is not None], dtype=np.float64)
        continuous[name] = [float(v) for v in present]
        summaries[name] = _summary(present)
    categorical = {
        name: dict(Counter(str(r.get(name) or "unknown") for r in rows)) for name in CATEGORICAL_FEATURES
    }
    data = np.asarray(embeddings, dtype=np.float64).reshape(len(rows), -1)
    mean = data.mean(axis=0)
    centred = data - mean
    k = max(1, min(embedding_dims, data.shape[0] - 1 if data.shape[0] > 1 else 1, data.shape[1]))
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:k]
    projected = centred[keep] @ components.T
    explained = (singular[:k] ** 2).sum() / max((singular**2).sum(), 1e-12)
    return ReferenceProfile(
        label_names=[str(n) for n in label_names],
        continuous=continuous,
        categorical=categorical,
        embedding_mean=[float(x) for x in mean],
        embedding_components=[[float(x) for x in row] for row in components],
        embedding_reference=[[float(x) for x in row] for row in projected],
        n_images=len(rows),
        summaries=summaries,
        meta={
            "embedding_dims": int(k),
            "embedding_input_dims": int(data.shape[1]),
            "embedding_explained_variance": float(explained),
            "max_samples": max_samples,
            "seed": seed,
        },
    )


def _read_pixels(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    image = apply_modality_lut(ds.pixel_array, ds)
    return np.asarray(image), attributes_from_dataset(ds)


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def compute_reference_profile(
    network: torch.nn.Module,
    rows: Sequence[Mapping[str, Any]],
    spec: PreprocessingSpec,
    *,
    label_names: Sequence[str],
    max_samples: int = 2000,
    embedding_dims: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> ReferenceProfile:
    """The reference profile of materialised rows (``imaging.datasets.materialize``; usually the
    train split) under a trained network, with the eval transform the model is served with.

    Acquisition attributes come from the row (the catalog's de-identified attributes) and fall
    back to the file's header; ``kvp`` and ``pixel_spacing`` come from the header.
    """
    network.eval()
    transform = spec.eval_transform()
    feature_rows: list[dict[str, Any]] = []
    embeddings: list[np.ndarray] = []
    for chunk in _batches(list(rows), batch_size):
        images = []
        for row in chunk:
            tensor = torch.as_tensor(np.asarray(transform({IMAGE_KEY: row[IMAGE_KEY]})[IMAGE_KEY]))
            images.append(tensor.float())
        probs, embedding = embed_and_score(network, torch.stack(images))
        embeddings.append(embedding)
        for row, scores in zip(chunk, probs, strict=True):
            pixels, header = _read_pixels(str(row[IMAGE_KEY]))
            attributes = {**header, **{k: row[k] for k in _ATTRIBUTE_FEATURES if row.get(k)}}
            feature_rows.append(live_feature_row(pixels, attributes, scores.tolist(), label_names))
    return profile_from_rows(
        feature_rows,
        np.concatenate(embeddings),
        label_names,
        max_samples=max_samples,
        embedding_dims=embedding_dims,
        seed=seed,
    )


def log_reference_profile(run_id: str, profile: ReferenceProfile, *, tracking_uri: str | None = None) -> str:
    """Log the profile as the run's ``monitoring/reference_profile.json`` and tag the run."""
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        from governance.settings import get_settings

        tracking_uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(tracking_uri=tracking_uri)
    client.log_dict(run_id, profile.to_dict(), PROFILE_ARTIFACT)
    client.set_tag(run_id, PROFILE_TAG, PROFILE_ARTIFACT)
    client.log_metric(run_id, "reference_profile_images", float(profile.n_images))
    return PROFILE_ARTIFACT


def load_reference_profile(run_id: str, *, tracking_uri: str | None = None) -> ReferenceProfile:
    """Read a run's reference profile back; raises ``FileNotFoundError`` when it has none."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        from governance.settings import get_settings

        tracking_uri = get_settings().resolved_mlflow_uri
    client = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, PROFILE_ARTIFACT, tmp)
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} has no reference profile ({PROFILE_ARTIFACT})") from exc
        return ReferenceProfile.from_dict(json.loads(Path(local).read_text()))
