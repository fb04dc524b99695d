"""Load registered RadGate models from the MLflow registry: the contract for explain and serving.

Contract (stable; other packages code against it)
-------------------------------------------------
``load_model(ref, *, tracking_uri=None, verify=True, map_location="cpu") -> LoadedModel``

* ``ref``: ``"NAME@ALIAS"`` (e.g. ``"chest-opacity@production"``), ``"NAME/VERSION"``
  (e.g. ``"chest-opacity/3"``) or ``"models:/NAME@ALIAS"`` / ``"models:/NAME/VERSION"``.
* Tracking URI: the argument, else ``governance.settings.get_settings().resolved_mlflow_uri``
  (embedded SQLite under ``RADGATE_HOME`` by default). The registry URI is the same.
* Raises :class:`ModelNotFoundError` (unknown name, version or alias, or not a RadGate model)
  and :class:`ArtifactIntegrityError` when ``verify`` and the downloaded artifact's tree hash
  differs from the version's ``radgate.artifact_sha256`` tag.
* Returns :class:`LoadedModel`:

  - ``module``: ``torch.nn.Module`` in eval mode on ``map_location``; input ``float32``
    ``[N, 1, H, W]`` in [0, 1] (``H, W = preprocessing.spatial_size``), output logits
    ``[N, len(label_names)]``; probabilities = ``softmax(dim=1)``; for binary models the
    positive class is index 1 (``positive_index``).
  - ``name``, ``version`` (str), ``label_names`` (tuple, index = class), ``network``
    (:class:`training.networks.NetworkFamily` value, e.g. ``"densenet121"``),
    ``gradcam_layer`` (module name of the last conv block: ``dict(module.named_modules())[...]``),
  - ``preprocessing``: :class:`training.preprocess.PreprocessingSpec` (``spatial_size``,
    ``intensity="dicom_window"``: header VOI window to [0, 1], min-max fallback, MONOCHROME1
    inverted; no axis swap, so tensor rows/cols are the DICOM ``pixel_array`` rows/cols before
    the resize). Use ``LoadedModel.preprocess(path_or_bytes)`` -> ``Tensor[1, 1, H, W]`` or
    ``LoadedModel.predict_proba(tensor)`` -> ``Tensor[N, C]``.
  - ``threshold``: the operating point chosen on the validation split (calibrated probability of
    the positive class at or above it = positive), ``None`` if not recorded.
  - ``temperature``: the temperature-scaling factor fitted on validation; the served (calibrated)
    probabilities are ``softmax(logits / temperature)`` (1.0 for models registered without one).
  - ``task``: ``"classification"`` or ``"segmentation"``; for segmentation versions (tag
    ``radgate.task=segmentation``) ``segmentation`` is the
    :class:`training.segmentation.spec.SegmentationSpec` (labels 1..K, spacing, roi_size,
    overlap, intensity, network; also the artifact ``segmentation.json``): input
    ``float32 (B, 1, Z, Y, X)``, output logits ``(B, K+1, Z, Y, X)``; ``label_names`` is
    ``("background", structure 1, ...)``, ``preprocessing`` a placeholder and ``threshold`` None.
  - ``run_id``, ``dataset_version``, ``artifact_sha256`` (recomputed on the downloaded files),
    ``tags`` (all model-version tags), ``local_dir`` (the downloaded MLflow model directory),
    ``torchscript_path`` (``extra_files/model.ts`` inside it, for Triton; may be ``None``),
    ``model_uri`` (``models:/NAME/VERSION``).

Model-version tags written at registration (names in :class:`governance.tags.Tag`)
  ``radgate.status`` = ``pending_review`` (governance changes it), ``radgate.artifact_sha256``
  (see :func:`artifact_sha256`), ``radgate.dataset_version``, ``radgate.network``,
  ``radgate.label_names`` (JSON list), ``radgate.preprocessing`` (JSON), ``radgate.threshold``,
  ``radgate.metrics.<name>`` (test ``auroc``, ``sensitivity``, ``specificity``, ``ece``,
  ``max_subgroup_auroc_gap``...), ``radgate.run_id``.

``artifact_sha256(model_dir)`` (:func:`governance.tags.artifact_sha256`) is the tree hash of an
MLflow model directory. Serving recomputes it after
``mlflow.artifacts.download_artifacts(model_uri)`` and compares it with the tag before loading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from governance.tags import Tag, artifact_sha256
from training.preprocess import PreprocessingSpec, preprocess_dicom
from training.segmentation.spec import SEGMENTATION_TASK, SegmentationSpec

__all__ = [
    "ArtifactIntegrityError",
    "LoadedModel",
    "ModelNotFoundError",
    "download_model_dir",
    "load_model",
    "parse_model_ref",
    "resolve_model_version",
]

#: Key of the RadGate entry in the MLmodel ``metadata``.
METADATA_KEY = "radgate"
TORCHSCRIPT_NAME = "model.ts"


class ModelNotFoundError(LookupError):
    """No such registered model, version or alias (or it is not a RadGate model)."""


class ArtifactIntegrityError(RuntimeError):
    """The downloaded artifact does not hash to the value recorded at registration."""


_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^@/]+)|/(?P<version>\d+))$")


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME@ALIAS`` or ``NAME/VERSION`` -> ``(name, alias, version)``."""
    match = _REF.match(ref.strip())
    if not match:
        raise ModelNotFoundError(f"model reference {ref!r} is not NAME@ALIAS or NAME/VERSION")
    return match["name"], match["alias"], match["version"]


@dataclass
class LoadedModel:
    """A registered model ready for inference (see the module docstring for each field)."""

    module: torch.nn.Module
    name: str
    version: str
    label_names: tuple[str, ...]
    preprocessing: PreprocessingSpec
    network: str
    gradcam_layer: str
    threshold: float | None
    run_id: str | None
    dataset_version: str | None
    artifact_sha256: str
    local_dir: Path
    torchscript_path: Path | None
    tags: dict[str, str] = field(default_factory=dict)
    task: str = "classification"
    #: Segmentation versions only: labels, spacing, patch and intensity the network expects.
    segmentation: SegmentationSpec | None = None
    #: Temperature scaling fitted on validation: probabilities are softmax(logits / temperature).
    temperature: float = 1.0
    #: How the weights were read: ``torchscript-state-dict`` (the network rebuilt from its family
    #: and the TorchScript's tensors: nothing unpickled) or ``pickle`` (MLflow's pickled module,
    #: from the verified private copy, for networks that cannot be rebuilt).
    weights_format: str = "pickle"

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def positive_index(self) -> int:
        return 1 if len(self.label_names) == 2 else len(self.label_names) - 1

    def preprocess(self, source: Path | str | bytes) -> torch.Tensor:
        """One DICOM (path or bytes) -> ``Tensor[1, 1, H, W]`` as the model was trained on."""
        if self.segmentation is not None:
            raise TypeError(
                f"{self.model_uri} segments series: use training.segmentation.inference.segment_volume"
            )
        return preprocess_dicom(source, self.preprocessing)

    @torch.no_grad()
    def predict_proba(self, batch: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities ``[N, C]`` for a preprocessed batch."""
        device = next(self.module.parameters()).device
        return torch.softmax(self.module(batch.to(device)) / self.temperature, dim=1).cpu()


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    if tracking_uri is None:
        from governance.settings import get_settings

        tracking_uri = get_settings().resolved_mlflow_uri
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_model_version(ref: str, *, tracking_uri: str | None = None) -> Any:
    """The ``mlflow.entities.model_registry.ModelVersion`` a reference points to."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_ref(ref)
    client = _client(tracking_uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise ModelNotFoundError(f"no registered model version for {ref!r}") from exc


def download_model_dir(client: Any, source: str, model_id: str | None = None) -> Path:
    """Download a model's artifacts through ``client``'s stores only.

    ``mlflow.artifacts.download_artifacts("models:/m-...")`` looks the logged model up in the
    process-wide default tracking store (``./mlflow.db``), whatever ``tracking_uri`` says; so
    resolve the artifact location here and download that plain URI.
    """
    import mlflow.artifacts

    if model_id or source.startswith("models:/m-"):
        logged = client.get_logged_model(model_id or source.removeprefix("models:/").split("/")[0])
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location))
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        return Path(client.download_artifacts(run_id, path))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source))


def load_model(
    ref: str, *, tracking_uri: str | None = None, verify: bool = True, map_location: str = "cpu"
) -> LoadedModel:
    """Download, verify and load a registered model version (see the module docstring)."""
    import mlflow.pytorch
    from mlflow.models import Model

    client = _client(tracking_uri)
    version = resolve_model_version(ref, tracking_uri=client.tracking_uri)
    uri = f"models:/{version.name}/{version.version}"
    downloaded = download_model_dir(client, version.source, getattr(version, "model_id", None))
    # Hash and load the same bytes: a private copy (owner-only) that nothing else writes, so the
    # files cannot change between the check and the load.
    local_dir = _private_copy(downloaded)
    tags = dict(version.tags or {})
    digest = artifact_sha256(local_dir)
    expected = tags.get(Tag.ARTIFACT_SHA256)
    if verify and expected != digest:
        raise ArtifactIntegrityError(
            f"{uri}: artifact hash {digest[:12]}... does not match the registered "
            f"{(expected or 'none')[:12]}..."
        )
    metadata = (Model.load(str(local_dir / "MLmodel")).metadata or {}).get(METADATA_KEY)
    if not metadata:
        raise ModelNotFoundError(f"{uri} is not a RadGate model (no radgate metadata)")
    module = _rebuilt_module(local_dir, metadata, map_location)
    weights_format = "torchscript-state-dict"
    if module is None:
        module = mlflow.pytorch.load_model(str(local_dir), map_location=map_location)
        weights_format = "pickle"
    module.eval()
    ts_matches = sorted(local_dir.rglob(TORCHSCRIPT_NAME))
    threshold = metadata.get("threshold")
    segmentation = None
    if metadata.get("task") == SEGMENTATION_TASK:
        segmentation = SegmentationSpec.from_dict(metadata["segmentation"])
    # Segmentation models record no 2D preprocessing: the default spec stands in (unused).
    preprocessing = metadata.get("preprocessing")
    return LoadedModel(
        module=module,
        name=version.name,
        version=str(version.version),
        label_names=tuple(metadata["label_names"]),
        preprocessing=PreprocessingSpec.from_dict(preprocessing) if preprocessing else PreprocessingSpec(),
        network=str(metadata["network"]),
        gradcam_layer=str(metadata["gradcam_layer"]),
        threshold=None if threshold is None else float(threshold),
        run_id=version.run_id,
        dataset_version=metadata.get("dataset_version"),
        artifact_sha256=digest,
        local_dir=local_dir,
        torchscript_path=ts_matches[0] if ts_matches else None,
        tags={str(k): str(v) for k, v in tags.items()},
        task=str(metadata.get("task") or "classification"),
        segmentation=segmentation,
        temperature=float(metadata.get("temperature") or 1.0),
        weights_format=weights_format,
    )


def _private_copy(source: Path) -> Path:
    """A copy of the downloaded model in a fresh owner-only directory (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="radgate-model-"))
    atexit.register(shutil.rmtree, target, True)
    if source.is_file():
        shutil.copy2(source, target / source.name)
        return target
    shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)
    return target


def _rebuilt_module(local_dir: Path, metadata: dict[str, Any], map_location: str) -> torch.nn.Module | None:
    """The network rebuilt from its family with the TorchScript export's tensors, or ``None``
    when that is not possible (no TorchScript, a segmentation or custom network, or tensors
    that do not fit): then the caller falls back to the pickled module."""
    import io

    from training.networks import NetworkFamily, build_network

    scripts = sorted(local_dir.rglob(TORCHSCRIPT_NAME))
    if not scripts or metadata.get("task") == SEGMENTATION_TASK or not metadata.get("preprocessing"):
        return None
    try:
        family = NetworkFamily(str(metadata["network"]))
    except ValueError:
        return None
    spec = PreprocessingSpec.from_dict(metadata["preprocessing"])
    module = build_network(family, num_classes=len(metadata["label_names"]), in_channels=spec.channels)
    # TorchScript is deserialised as a graph and tensors (no Python objects are unpickled).
    script = torch.jit.load(io.BytesIO(scripts[0].read_bytes()), map_location=map_location)
    try:
        module.load_state_dict(script.state_dict(), strict=True)
    except RuntimeError:
        return None
    return module.to(map_location)


def model_metadata(
    *,
    label_names: list[str],
    preprocessing: PreprocessingSpec | SegmentationSpec,
    network: str,
    gradcam_layer: str,
    threshold: float | None,
    dataset_version: str,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The ``metadata`` dict to pass to ``mlflow.pytorch.log_model`` (read back by load_model).

    For a segmentation model ``preprocessing`` is its :class:`SegmentationSpec`, recorded under
    ``segmentation`` with ``task: segmentation``.
    """
    entry: dict[str, Any] = {
        "label_names": list(label_names),
        "network": network,
        "gradcam_layer": gradcam_layer,
        "threshold": threshold,
        "temperature": temperature,
        "dataset_version": dataset_version,
        "format": 1,
    }
    if isinstance(preprocessing, SegmentationSpec):
        entry.update(task=SEGMENTATION_TASK, segmentation=preprocessing.to_dict())
    else:
        entry.update(task="classification", preprocessing=preprocessing.to_dict())
    return {METADATA_KEY: entry}


def labels_from_tag(value: str) -> list[str]:
    return list(json.loads(value))
