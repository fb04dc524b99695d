"""Serving a segmentation model: a posted series -> volume -> labels -> JSON and DICOM SEG + SR.

:func:`predict_series` is what a model worker runs for a version registered with
``radgate.task=segmentation`` (same gate, same audit and metrics as classification; only the
body of the request differs): the instances must form **one** series that
:func:`imaging.volumes.assemble_series` accepts (no gap, one orientation, size and frame of
reference), else the answer is a 422 naming the problem (PHI-free). The labels go through
:func:`training.segmentation.inference.segment_volume`; with ``dicom`` the worker also returns
a DICOM Segmentation of the series and a Comprehensive 3D SR of the structure volumes
(:mod:`imaging.results.segmentation`), which the ingress answers as ``multipart/related`` or
pushes to the PACS. A JSON request with ``explain=gradcam|occlusion`` also gets the attribution
of the largest structure on its three busiest slices as PNG overlays
(:mod:`training.explain.segmentation`).
"""

from __future__ import annotations

import time
import uuid
from io import BytesIO
from typing import TYPE_CHECKING, Any

from governance.tags import Tag

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from serving.model import ServedPredictor

__all__ = ["SEGMENTATION_TASK", "predict_series"]

SEGMENTATION_TASK = "segmentation"
_EXPLAIN_METHODS = ("gradcam", "occlusion")


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


def _datasets(instances: list[bytes]) -> list[Dataset]:
    from pydicom import dcmread

    return [dcmread(BytesIO(data), force=True) for data in instances]


def _encode(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def predict_series(predictor: ServedPredictor, payload: dict[str, Any]) -> dict[str, Any]:
    """One series (``payload["instances"]``) through a segmentation model (module docstring)."""
    from imaging.results import AlgorithmIdentity, SegmentationResultError, build_segmentation_results
    from imaging.volumes import SeriesGeometryError, assemble_series
    from training.segmentation.inference import SegmentationInferenceError, segment_volume, spec_of

    spec = spec_of(predictor.loaded)
    if spec is None:
        return _error(503, "the served version has no segmentation spec")
    explain = None if payload.get("dicom") else payload.get("explain")
    if explain is not None and explain not in _EXPLAIN_METHODS:
        return _error(422, f"segmentation models explain with {' or '.join(_EXPLAIN_METHODS)}")
    if predictor.forward.name != "inprocess":
        return _error(422, "segmentation models are served in-process only")
    started = time.perf_counter()
    datasets = _datasets(payload["instances"])
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1 or "" in series:
        return _error(
            422, f"a segmentation request carries one series; got instances of {len(series)} series"
        )
    try:
        volume = assemble_series(datasets)
    except SeriesGeometryError as exc:
        return _error(422, str(exc))
    assembled = time.perf_counter()
    try:
        result = segment_volume(predictor.loaded.module, volume, spec)
    except SegmentationInferenceError as exc:
        return _error(422, f"cannot segment this series: {exc}")
    segmented = time.perf_counter()
    objects: list[bytes] = []
    if payload.get("dicom"):
        by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
        sources = [by_uid[uid] for uid in volume.sop_instance_uids]
        algorithm = AlgorithmIdentity(
            name=predictor.loaded.name, version=predictor.version, method=SEGMENTATION_TASK
        )
        try:
            seg, sr = build_segmentation_results(
                sources, result.labels, result.structures, result.volumes_ml, algorithm
            )
        except SegmentationResultError as exc:
            return _error(422, f"cannot build DICOM results for this series ({exc})")
        objects = [_encode(seg), _encode(sr)]
    explanation = _explanation(predictor, volume, spec, result, explain) if explain else None
    done = time.perf_counter()
    summary = result.to_dict()
    return {
        "model": {
            "name": predictor.loaded.name,
            "version": predictor.version,
            "backend": predictor.forward.name,
            "task": SEGMENTATION_TASK,
        },
        "approval": predictor.approval(),
        "results": [
            {
                "request_id": uuid.uuid4().hex,
                "task": SEGMENTATION_TASK,
                "series_instance_uid": volume.series_instance_uid,
                "study_instance_uid": str(datasets[0].get("StudyInstanceUID", "")),
                "slices": len(volume.sop_instance_uids),
                "geometry": [str(issue) for issue in volume.geometry.issues],
                "structures": summary["structures"],
                "shape": summary["shape"],
                "spacing_mm": summary["spacing_mm"],
                "model_grid": summary["model_grid"],
                **({"explanation": explanation} if explanation is not None else {}),
            }
        ],
        "objects": [objects],
        "batch_sizes": [1],
        "timings_ms": {
            "assemble": round((assembled - started) * 1000, 2),
            **result.timings_ms,
            "forward": round((segmented - assembled) * 1000, 2),
            "results": round((done - segmented) * 1000, 2),
        },
    }


def _explanation(
    predictor: ServedPredictor, volume: Any, spec: Any, result: Any, method: str
) -> dict[str, Any]:
    """The largest structure's attribution on its busiest slices (PNG, base64); no voxels, no UIDs."""
    import base64

    from training.explain.segmentation import explain_structure, render_slices

    present = result.present()
    if not present:
        return {"method": method, "structure": None, "note": "no structure found in this series"}
    label = max(present, key=lambda k: result.voxel_counts[result.structures[k]])
    try:
        explained = explain_structure(
            predictor.loaded.module, volume, spec, label, method=method, labels=result.labels
        )
    except ValueError as exc:  # e.g. no decoder layer to attribute to: the segmentation stands
        return {"method": method, "structure": result.structures[label], "note": str(exc)[:200]}
    slices = render_slices(
        volume,
        explained,
        model_name=predictor.loaded.name,
        model_version=predictor.version,
        approval=predictor.loaded.tags.get(Tag.STATUS, "unknown"),
    )
    return {
        "method": explained.method.value,
        "structure": explained.structure,
        "slices": [{"index": z, "png_base64": base64.b64encode(png).decode("ascii")} for z, png in slices],
    }
