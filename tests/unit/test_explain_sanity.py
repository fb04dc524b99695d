"""Sanity check (Adebayo et al. 2018) on a small MONAI DenseNet trained on the demo radiographs,
faithfulness curves, clinician summary, gallery selection and the MLflow record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet
from torch import nn

from training.explain import (
    SANITY_METRIC,
    SANITY_TAG,
    Explainer,
    Outcome,
    SanityConfig,
    attribution_focus,
    clinician_summary,
    deletion_insertion,
    log_sanity_result,
    randomize_parameters,
    run_randomization_check,
    select_gallery_cases,
    spearman,
)
from training.explain.sanity import cascade_blocks, map_ssim


def _small_densenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return DenseNet(
        spatial_dims=2, in_channels=1, out_channels=2, init_features=16, growth_rate=8, block_config=(2, 2, 2)
    )


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    """96 preprocessed 64x64 demo radiographs (half with an opacity) and their labels."""
    from imaging.demo_data import write_demo_studies
    from training.preprocess import PreprocessingSpec, preprocess_dicom

    demo = write_demo_studies(
        tmp_path_factory.mktemp("demo"), patients=48, images_per_patient=2, seed=1, size=64
    )
    spec = PreprocessingSpec(spatial_size=(64, 64))
    images = torch.cat([preprocess_dicom(study.path, spec) for study in demo.studies])
    labels = torch.tensor([study.label for study in demo.studies])
    return images, labels


@pytest.fixture(scope="module")
def trained(demo_split: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    images, labels = demo_split
    torch.manual_seed(0)
    model = _small_densenet(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_x, train_y = images[:80], labels[:80]
    for _ in range(12):
        model.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x), 16):
            batch = order[start : start + 16]
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


def _positives(demo_split: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    images, labels = demo_split
    held_out = torch.arange(80, len(images))
    return images[held_out[labels[held_out] == 1][:4]]


def test_explain_sanity_spearman_and_ssim_helpers() -> None:
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert spearman(ramp, ramp * 3 + 1) == pytest.approx(1.0)
    assert spearman(ramp, -ramp) == pytest.approx(-1.0)
    assert spearman(ramp, np.zeros_like(ramp)) == 0.0
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert map_ssim(image, image) == pytest.approx(1.0, abs=1e-4)
    assert map_ssim(image, 1 - image) < 0.5


def test_explain_sanity_randomisation_is_reproducible_and_leaves_the_original() -> None:
    model = _small_densenet(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = _small_densenet(0), _small_densenet(0)
    randomize_parameters(first, seed=3)
    randomize_parameters(second, seed=3)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, before[k]) for k, a in first.state_dict().items() if a.is_floating_point())
    run_randomization_check(model, torch.rand(2, 1, 64, 64), config=SanityConfig(cascade=False))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_explain_sanity_cascade_blocks_go_input_to_output() -> None:
    blocks = cascade_blocks(_small_densenet(0))
    assert blocks[0] == "features.conv0" and blocks[-1] == "class_layers"
    assert "features.denseblock3" in blocks


def test_explain_sanity_passes_for_trained_fails_for_untrained(
    demo_split: tuple[torch.Tensor, torch.Tensor], trained: nn.Module
) -> None:
    images = _positives(demo_split)
    good = run_randomization_check(trained, images)
    assert good.passed, good.reasons
    assert abs(good.spearman) <= good.threshold and good.control_spearman == pytest.approx(1.0)
    assert good.faithfulness_gap is not None and good.faithfulness_gap > 0.05
    assert next(step.block for step in good.cascade) == "class_layers"
    assert len(good.cascade) == len(cascade_blocks(trained))

    untrained = run_randomization_check(_small_densenet(5), images, config=SanityConfig(cascade=False))
    assert not untrained.passed
    assert any("not faithful" in reason for reason in untrained.reasons)


def test_explain_sanity_fails_when_the_map_ignores_the_weights() -> None:
    """Saliency of a model dominated by a weight-free term (sum of squares) is an image of the
    input whatever the weights: the randomisation criterion itself must fail."""

    class InputDominated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _small_densenet(0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            energy = (x**2).sum(dim=(1, 2, 3))
            return torch.stack([-energy, energy], dim=1) + 1e-4 * self.net(x)

    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    config = SanityConfig.model_validate(
        {"method": "saliency", "cascade": False, "min_faithfulness_gap": None}
    )
    result = run_randomization_check(InputDominated(), images, config=config, targets=[1, 1, 1])
    assert not result.passed
    assert result.spearman > 0.9
    assert any("barely change" in reason for reason in result.reasons)


def test_explain_faithfulness_prefers_the_real_map(
    demo_split: tuple[torch.Tensor, torch.Tensor], trained: nn.Module
) -> None:
    images = _positives(demo_split)
    explanation = Explainer(trained).explain(images, "gradcam", target=1)
    real = deletion_insertion(trained, images, explanation, steps=8)
    inverted = deletion_insertion(
        trained,
        images,
        type(explanation)(**{**explanation.__dict__, "maps": 1.0 - explanation.maps}),
        steps=8,
    )
    assert real.gap > inverted.gap
    assert set(real.metrics()) == {
        "faithfulness_deletion_auc_gradcam",
        "faithfulness_insertion_auc_gradcam",
        "faithfulness_gap_gradcam",
    }


def test_explain_summary_is_deterministic_and_uses_patient_terms() -> None:
    heat = np.zeros((30, 30), dtype=np.float32)
    heat[2:8, 22:28] = 1.0  # upper right of the image
    focus = attribution_focus(heat, ("L", "F"))
    assert focus is not None
    assert focus.image_region == "upper right" and focus.patient_region == "patient's left, superior"
    assert focus.spread == "focal"
    kwargs = dict(finding="opacity", probability=0.876, method="Grad-CAM", model_name="m", model_version="2")
    text = clinician_summary(focus=focus, approval="approved", **kwargs)  # type: ignore[arg-type]
    assert text == clinician_summary(focus=focus, approval="approved", **kwargs)  # type: ignore[arg-type]
    assert "opacity (probability 0.88)" in text and "version 2" in text and "approved" in text
    assert "upper right of the image (patient's left, superior)" in text
    assert attribution_focus(np.zeros((4, 4))) is None
    assert "no image region stands out" in clinician_summary(focus=None, **kwargs)  # type: ignore[arg-type]


def test_explain_gallery_selects_each_outcome_most_confident_first() -> None:
    labels = [1, 1, 0, 0, 1, 0, 1, 0]
    probabilities = [0.9, 0.6, 0.7, 0.1, 0.2, 0.95, 0.4, 0.3]
    cases = select_gallery_cases(labels, probabilities, per_outcome=1)
    assert [(c.outcome, c.index) for c in cases] == [
        (Outcome.TRUE_POSITIVE, 0),
        (Outcome.FALSE_POSITIVE, 5),
        (Outcome.FALSE_NEGATIVE, 4),
        (Outcome.TRUE_NEGATIVE, 3),
    ]


def test_explain_sanity_result_lands_where_the_policy_reads_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings

    uri = get_settings().resolved_mlflow_uri
    get_settings().home.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("sanity", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    client.create_registered_model("chest-opacity")
    version = client.create_model_version("chest-opacity", str(tmp_path / "model"), run_id=run.info.run_id)

    result = run_randomization_check(
        _small_densenet(0), torch.rand(2, 1, 64, 64), config=SanityConfig(cascade=False)
    )
    log_sanity_result(
        result, run_id=run.info.run_id, model_name="chest-opacity", model_version=version.version
    )

    tags = client.get_model_version("chest-opacity", version.version).tags
    assert tags[SANITY_TAG] == result.status
    assert float(tags[f"radgate.{SANITY_METRIC}"]) == pytest.approx(result.spearman, abs=1e-4)
    logged = client.get_run(run.info.run_id).data
    assert logged.metrics[SANITY_METRIC] == pytest.approx(result.spearman)
    assert logged.tags[SANITY_TAG] == result.status
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "explain")]
    assert artifacts == ["explain/sanity.json"]


def test_explain_after_training_records_sanity_faithfulness_and_gallery(
    demo_split: tuple[torch.Tensor, torch.Tensor], trained: nn.Module, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from governance.settings import get_settings
    from training.explain import explain_after_training, sanity_sample

    images, labels = demo_split
    test_x, test_y = images[80:], labels[80:]
    with torch.no_grad():
        scores = torch.softmax(trained(test_x), dim=1)[:, 1].tolist()
    assert sanity_sample([0.2, 0.9, 0.6, 0.1], 3) == [1, 2, 0]

    uri = get_settings().resolved_mlflow_uri
    get_settings().home.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("post", artifact_location=str(tmp_path / "artifacts")))
    client.create_registered_model("chest-opacity")
    version = client.create_model_version("chest-opacity", str(tmp_path / "model"), run_id=run.info.run_id)

    report = explain_after_training(
        trained,
        test_x,
        test_y.tolist(),
        scores,
        run_id=run.info.run_id,
        model_name="chest-opacity",
        model_version=version.version,
        label_names=("no_finding", "opacity"),
        sanity_images=4,
        faithfulness_images=8,
        gallery_per_outcome=1,
        sanity_config=SanityConfig(cascade=False),
    )
    assert report.sanity.passed, report.sanity.reasons
    assert client.get_model_version("chest-opacity", version.version).tags[SANITY_TAG] == "passed"
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {"faithfulness_gap_gradcam", "faithfulness_gap_saliency", SANITY_METRIC} <= set(metrics)
    gallery = [a.path for a in client.list_artifacts(run.info.run_id, "explain/gallery")]
    assert "explain/gallery/gallery.json" in gallery
    assert sum(path.endswith(".png") for path in gallery) == len(report.gallery) >= 2


class _BlobDetector(nn.Module):
    """Fires on any bright region wider than a few pixels, blurred or not (one output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(x, 8)
        return (40 * (pooled.amax(dim=(1, 2, 3)) - 0.45)).unsqueeze(1)


def test_explain_deletion_removes_a_large_bright_finding() -> None:
    """The exact map of a large bright blob: deleting it must lower the score. Deleting into a
    blurred copy left a blob the detector still saw, and the map looked unfaithful (gap ~0)."""
    from training.explain.core import ExplainMethod, Explanation

    yy, xx = np.mgrid[:128, :128]
    blob = ((yy - 60) ** 2 + (xx - 70) ** 2 <= 9**2).astype(np.float32)
    image = torch.as_tensor(0.2 + 0.8 * blob)[None, None]
    model = _BlobDetector()
    with torch.no_grad():
        probability = torch.sigmoid(model(image)).numpy()
    assert probability[0, 0] > 0.99
    exact = Explanation(ExplainMethod.GRADCAM, blob[None], (0,), probability)
    result = deletion_insertion(model, image, exact, steps=16)
    assert result.deletion_auc < 0.3 and result.gap > 0.5
