"""Segmentation through the real serving path: a 3D UNet version registered in a real
MLflow store and approved through the real workflow, served by Ray Serve on 127.0.0.1; a series
posted as multipart/related comes back as JSON volumes or DICOM SEG + SR, and is pushed into a
real Orthanc, where the SEG appears in the series' study; the inference AE gathers a series
routed by Orthanc and the results land back in it. Unapproved versions and malformed series
(several series, a missing slice) are refused with a 4xx and a clear message.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import httpx
import pytest

from serving.net import free_port
from tests.seg_series import encode, make_series

pytestmark = pytest.mark.integration

MODEL = "brain-seg"
PENDING = "brain-seg-pending"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, orthanc: Any) -> Iterator[dict[str, Any]]:
    import ray
    from ray import serve

    from governance.settings import get_settings
    from governance.testing import create_cast
    from serving.app import run, start_ray
    from serving.config import ServeConfig
    from serving.testing import approve_and_promote, register_segmentation_model

    home = tmp_path_factory.mktemp("seg-serve-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADGATE_HOME", str(home))
        mp.setenv("RADGATE_PROJECT_KEY", "44" * 32)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.delenv("RADGATE_CATALOG_URL", raising=False)
        get_settings.cache_clear()
        cast = create_cast()
        version = register_segmentation_model(MODEL, labels={1: "Thalamus", 2: "lesion"})
        approve_and_promote(MODEL, version, cast)
        pending = register_segmentation_model(PENDING, seed=1)
        port = free_port()
        config = ServeConfig.model_validate(
            {
                "port": port,
                "gate_ttl_s": 2,
                "ingress_num_cpus": 0.5,
                "pacs": {
                    "name": "orthanc",
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                },
                "models": [
                    {"name": MODEL, "num_cpus": 1},
                    {"name": PENDING, "version": pending, "num_cpus": 0.5},
                ],
            }
        )
        start_ray(config, num_cpus=2, temp_dir=f"/tmp/rg-ray-seg-{os.getpid()}")
        try:
            run(config)
            yield {
                "url": f"http://127.0.0.1:{port}", "cast": cast, "version": version, "orthanc": orthanc,
                "home": home,
            }  # fmt: skip
        finally:
            serve.shutdown()
            ray.shutdown()
            get_settings.cache_clear()


def _post(served: dict[str, Any], name: str, instances: list[bytes], query: str = "") -> httpx.Response:
    from imaging.gateway.multipart import build_related

    body, content_type = build_related(instances)
    return httpx.post(
        f"{served['url']}/v1/models/{name}/predict{query}",
        content=body,
        headers={"Authorization": f"Bearer {served['cast'].tokens['pacs']}", "Content-Type": content_type},
        timeout=180,
    )


def test_series_segmented_as_json_and_as_seg_pushed_to_orthanc(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydicom import dcmread

    from imaging.gateway.multipart import content_type_params, iter_parts

    orthanc = served["orthanc"]
    orthanc.clear()
    series = make_series(slices=16, size=48, spacing=(3.0, 2.0, 2.0), seed=11)
    for ds in series:
        orthanc.upload(encode(ds))
    instances = [encode(ds) for ds in series]

    reply = _post(served, MODEL, instances)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"]["task"] == "segmentation" and body["model"]["version"] == served["version"]
    assert body["approval"]["version"] == served["version"]
    (result,) = body["results"]
    assert [s["name"] for s in result["structures"]] == ["Thalamus", "lesion"]
    assert result["shape"] == [16, 48, 48] and result["model_grid"] == [16, 32, 32]
    voxel_ml = 3.0 * 2.0 * 2.0 / 1000
    for structure in result["structures"]:
        assert structure["volume_ml"] == pytest.approx(structure["voxels"] * voxel_ml, abs=1e-3)

    # listed in the reviewer's Cases, with what was found and its study (the viewer link)
    from governance.settings import get_settings
    from serving.ui.predictions import load_prediction, recent_predictions

    monkeypatch.setenv("RADGATE_HOME", str(served["home"]))  # the serving side's catalog and keys
    get_settings.cache_clear()
    assert result["request_id"] in [p.request_id for p in recent_predictions(model=MODEL).items]
    case = load_prediction(result["request_id"])
    assert case.summary.startswith(("Segmented:", "No structure found"))
    assert case.study_instance_uid == str(series[0].StudyInstanceUID)
    assert case.predicted_label.endswith("of 2 structures") and case.probability is None

    explained = _post(served, MODEL, instances, "?explain=gradcam").json()["results"][0]["explanation"]
    found = [s for s in result["structures"] if s["voxels"]]
    assert (explained["structure"] is None) == (not found)  # an untrained network may find nothing
    if found:
        largest = max(found, key=lambda s: s["voxels"])["name"]
        assert explained["structure"] == largest and len(explained["slices"]) == 3
        assert base64.b64decode(explained["slices"][0]["png_base64"]).startswith(b"\x89PNG")
    refused = _post(served, MODEL, instances[:4], "?explain=ig")
    assert refused.status_code == 422 and "gradcam or occlusion" in refused.json()["detail"]

    reply = _post(served, MODEL, instances, "?response=dicom&push=true")
    assert reply.status_code == 200, reply.text
    _, params = content_type_params(reply.headers["content-type"])
    objects = [dcmread(BytesIO(p.body)) for p in iter_parts(reply.content, params["boundary"])]
    by_modality = {str(o.Modality): o for o in objects}
    assert set(by_modality) == {"SEG", "SR"}
    seg = by_modality["SEG"]
    source_uids = {str(ds.SOPInstanceUID) for ds in series}
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for item in seg.ReferencedSeriesSequence
        for ref in item.ReferencedInstanceSequence
    }
    assert referenced == source_uids
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["Thalamus", "lesion"]

    found = orthanc.rest(
        "POST",
        "/tools/find",
        {"Level": "Series", "Query": {"StudyInstanceUID": str(series[0].StudyInstanceUID)}, "Expand": True},
    )
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in found)
    assert modalities == ["MR", "SEG", "SR"], modalities


def test_unapproved_segmentation_version_is_refused(served: dict[str, Any]) -> None:
    reply = _post(served, PENDING, [encode(ds) for ds in make_series(slices=8, size=32, seed=12)])
    assert reply.status_code == 403, reply.text
    assert "not approved" in reply.json()["detail"]


def test_malformed_series_get_a_4xx_with_the_reason(served: dict[str, Any]) -> None:
    one = make_series(slices=8, size=32, seed=13, shuffle=False)
    other = make_series(slices=8, size=32, seed=14, shuffle=False)
    mixed = _post(served, MODEL, [encode(ds) for ds in [*one[:4], *other[:4]]])
    assert mixed.status_code == 422 and "one series" in mixed.json()["detail"], mixed.text
    missing = _post(served, MODEL, [encode(ds) for i, ds in enumerate(one) if i != 4])
    assert missing.status_code == 422 and "gap" in missing.json()["detail"], missing.text
    assert "SYNTH" not in missing.text and str(one[0].SeriesInstanceUID) not in missing.text


def test_inference_ae_gathers_a_series_and_returns_seg_to_the_pacs(served: dict[str, Any]) -> None:
    from serving.inference_ae import InferenceAE

    orthanc = served["orthanc"]
    orthanc.clear()
    series = make_series(slices=12, size=32, spacing=(3.0, 2.0, 2.0), seed=15)
    uploaded = [orthanc.upload(encode(ds)) for ds in series]
    port = free_port()
    node = InferenceAE(
        serve_url=served["url"],
        model=MODEL,
        token=served["cast"].tokens["pacs"],
        port=port,
        allowed_aes={orthanc.aet},
    ).start()
    try:
        assert node.series_mode  # asked of the serving API: the model segments
        orthanc.add_modality("radgate-seg", "RADGATE-AI", "127.0.0.1", port)
        orthanc.rest(
            "POST",
            "/modalities/radgate-seg/store",
            {"Resources": [u["ParentSeries"] for u in uploaded[:1]], "Synchronous": True},
        )
        node.drain()
    finally:
        node.stop()
    assert node.stats.received == 12 and node.stats.predicted == 1, node.stats
    found = orthanc.rest(
        "POST",
        "/tools/find",
        {"Level": "Series", "Query": {"StudyInstanceUID": str(series[0].StudyInstanceUID)}, "Expand": True},
    )
    assert sorted(s["MainDicomTags"].get("Modality", "") for s in found) == ["MR", "SEG", "SR"]
