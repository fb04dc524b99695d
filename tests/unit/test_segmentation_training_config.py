"""Segmentation training: config and spec validation, policy checks on Dice (pure, fast)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from governance.policy import Evidence, ModelPolicy, Submission, evaluate, load_policy
from training.config import ConfigError, TrainTask, load_config, validate_config
from training.segmentation import SegmentationSpec, SegmentationSpecError

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
SHA = "b" * 64


def _seg(**section: Any) -> dict[str, Any]:
    return {"name": "seg", "task": "segmentation", "data": {"dataset": "anatomy"}, "segmentation": section}


def test_demo_config_is_a_segmentation_recipe_and_classification_is_unchanged() -> None:
    config = load_config(REPO / "configs" / "train" / "segmentation-demo.yaml")
    assert config.task is TrainTask.SEGMENTATION and config.segmentation is not None
    spec = config.segmentation.spec({1: "left hippocampus", 2: "right hippocampus"})
    assert spec.num_classes == 3 and spec.network == "unet" and spec.intensity == "zscore_nonzero"
    classifier = load_config(REPO / "configs" / "train" / "demo.yaml")
    assert classifier.task is TrainTask.CLASSIFICATION and classifier.segmentation is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "s", "task": "segmentation", "data": {"dataset": "d"}}, "needs a segmentation: section"),
        ({"name": "s", "data": {"dataset": "d"}, "segmentation": {}}, "needs task: segmentation"),
        ({"name": "s", "task": "segmentation-3d", "data": {"dataset": "d"}}, "task:"),
        ({**_seg(), "model": {"network": "resnet18"}}, "segmentation.network"),
        ({**_seg(), "data": {"dataset": "d", "spatial_size": [64, 64]}}, "data.spatial_size"),
        ({**_seg(), "data": {"dataset": "d", "augment": {"flip_prob": 0.5}}}, "flip"),
        (_seg(network="swin_unetr", roi_size=[32, 32, 32]), "multiple of 32 and at least 64"),
        (_seg(network="vnet"), "segmentation.network"),
        (_seg(roi_size=[4, 32, 32]), "at least 8"),
        (_seg(spacing=[0, 1, 1]), "spacing must be positive"),
        (_seg(channels=[8]), "at least two"),
        (_seg(overlap=1.0), "segmentation.overlap"),
        (_seg(patch=[8, 8, 8]), "segmentation.patch: unknown field"),
    ],
)
def test_config_errors_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(data)
    assert message in str(error.value)


def test_spec_round_trips_as_segmentation_json_and_rejects_bad_labels(tmp_path: Path) -> None:
    spec = SegmentationSpec(labels={2: "b", 1: "a"}, spacing=(3, 2, 2), roi_size=(16, 32, 32))
    assert SegmentationSpec.load(spec.save(tmp_path).parent) == spec
    assert spec.structures == ["a", "b"] and spec.to_dict()["labels"] == {"1": "a", "2": "b"}
    for labels, message in (({2: "b"}, "1..K"), ({1: "a", 2: "a"}, "distinct"), ({}, "at least one")):
        with pytest.raises(SegmentationSpecError, match=message):
            SegmentationSpec.from_dict({"labels": labels, "spacing": [1, 1, 1], "roi_size": [8, 8, 8]})
    with pytest.raises(SegmentationSpecError, match="not JSON"):
        SegmentationSpec.from_json("{")


def _evidence(metrics: dict[str, float], task: str | None) -> Evidence:
    tags = {"radgate.artifact_sha256": SHA, "radgate.dataset.deidentified": "true"}
    if task:
        tags["radgate.task"] = task
    submission = Submission("alice", NOW, SHA)
    return Evidence("m", "1", SHA, submission, [], metrics, tags, frozenset({"alice"}))


def _checks(policy: ModelPolicy, evidence: Evidence) -> dict[str, Any]:
    return {i.name: i for i in evaluate(policy, evidence, NOW).items if i.kind == "check"}


def test_shipped_policy_checks_dice_for_segmenters_and_auroc_for_classifiers() -> None:
    policy = load_policy(REPO / "configs" / "governance" / "policy.yaml").default
    good = {"test_dice_mean": 0.82, "test_dice_left": 0.80, "test_dice_right": 0.84,
            "test_hd95_left": 4.0, "max_subgroup_dice_gap": 0.05}  # fmt: skip
    checks = _checks(policy, _evidence(good, "segmentation"))
    # No AUROC, calibration or saliency demanded of a segmentation model, and it passes on Dice.
    assert set(checks) == {"dataset_deidentified", "min_dice", "max_subgroup_dice_gap"}
    assert all(item.passed for item in checks.values())
    assert checks["min_dice"].value == pytest.approx(0.80)  # the worst structure is reported
    weak = _checks(
        policy, _evidence({**good, "test_dice_left": 0.6, "test_dice_right": 0.55}, "segmentation")
    )["min_dice"]
    assert not weak.passed and weak.value == pytest.approx(0.55)  # the worst failing value
    assert "test_dice_left=0.6" in weak.detail and "test_dice_right=0.55" in weak.detail
    missing = _checks(policy, _evidence({"max_subgroup_dice_gap": 0.0}, "segmentation"))
    assert not missing["min_dice"].passed and missing["min_dice"].detail == "missing"
    # A classifier (no task tag: registered before tasks existed) is not asked for a Dice.
    classifier = _checks(policy, _evidence({"test_auroc": 0.9}, None))
    assert "min_dice" not in classifier and "test_auroc" in classifier and classifier["test_auroc"].passed


def test_prefix_key_must_be_a_trailing_star() -> None:
    base = {"name": "x", "key": "test_*dice", "op": ">=", "threshold": 0.5}
    with pytest.raises(ValueError, match="trailing"):
        ModelPolicy.model_validate(
            {"approvals": [{"role": "ml-engineer"}], "approval_valid_days": 1, "allowed_aliases": ["staging"],
             "checks": [base]}
        )  # fmt: skip


def test_training_sees_the_voxels_serving_feeds_the_network(tmp_path: Path) -> None:
    """The eval transform of training (NIfTI rows) equals inference's prepare_volume (a Volume's
    array): same grid at the spec's spacing, same interpolation, same normalisation."""
    import nibabel as nib
    import numpy as np
    import torch

    from tests.seg_volumes import write_rows
    from training.segmentation.data import eval_transform
    from training.segmentation.inference import prepare_volume

    row = write_rows(tmp_path, 1, first_seed=7, spacing=(3.0, 2.0, 2.0))[0]
    spec = SegmentationSpec(labels={1: "left", 2: "right"}, spacing=(4.0, 3.0, 3.0), roi_size=(8, 8, 8))
    sample = eval_transform(spec)(row)
    image = nib.load(row["image"])
    assert isinstance(image, nib.Nifti1Image)
    array = np.asarray(image.dataobj, dtype=np.float32)
    served = prepare_volume(array, (3.0, 2.0, 2.0), spec)[0]
    assert tuple(sample["image"].shape) == tuple(served.shape) == (1, 15, 21, 21)
    torch.testing.assert_close(torch.as_tensor(sample["image"]).float(), served, atol=1e-4, rtol=1e-4)
    labels = torch.as_tensor(sample["label"])
    assert labels.dtype == torch.uint8 and set(labels.unique().tolist()) == {0, 1, 2}


def test_both_networks_build_with_one_output_channel_per_label() -> None:
    import torch

    from training.segmentation.networks import build_segmentation_network

    unet = build_segmentation_network("unet", num_classes=3, channels=(4, 8, 16)).eval()
    with torch.no_grad():
        assert unet(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    swin = build_segmentation_network("swin_unetr", num_classes=3, channels=(8, 16))
    assert swin.out.conv.out_channels == 3 and swin.swinViT.embed_dim == 12  # feature size >= 12
