"""training.explain core: one interface over Captum methods on small MONAI networks (64x64)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet18
from torch import nn

from training.explain import (
    ExplainConfig,
    Explainer,
    ExplainError,
    ExplainMethod,
    NetworkFamily,
    TargetLayerError,
    detect_family,
    explain,
    resolve_target_layer,
)

FAST = ExplainConfig(ig_steps=4, occlusion_window_fraction=0.25, occlusion_stride_fraction=0.25)


@pytest.fixture(scope="module")
def densenet() -> nn.Module:
    torch.manual_seed(0)
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(2, 1, 64, 64, generator=generator)


class _Wrapper(nn.Module):
    """A LightningModule-like wrapper: the MONAI network sits under ``net``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _PlainCnn(nn.Module):
    def __init__(self, outputs: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, stride=2)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_explain_gradcam_layer_per_monai_family(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    cases = [
        (
            DenseNet121(spatial_dims=2, in_channels=1, out_channels=2),
            NetworkFamily.DENSENET121,
            "class_layers.relu",
        ),
        (resnet18(spatial_dims=2, n_input_channels=1, num_classes=2), NetworkFamily.RESNET18, "layer4"),
        (
            EfficientNetBN("efficientnet-b0", spatial_dims=2, in_channels=1, num_classes=2, pretrained=False),
            NetworkFamily.EFFICIENTNET_B0,
            "_bn1",
        ),
    ]
    for model, family, layer in cases:
        assert detect_family(model) == (family, "")
        name, module = resolve_target_layer(model, images)
        assert name == layer and module is model.get_submodule(layer)
    wrapped = _Wrapper(cases[0][0])
    assert resolve_target_layer(wrapped, images)[0] == "net.class_layers.relu"


def test_explain_unknown_network_probes_last_feature_map(images: torch.Tensor) -> None:
    model = _PlainCnn()
    assert detect_family(model)[0] is None
    # ``act`` runs twice per forward, so the last single-use feature map is conv2's output.
    assert resolve_target_layer(model, images)[0] == "conv2"
    with pytest.raises(TargetLayerError):
        resolve_target_layer(model, images, override="no.such.layer")


@pytest.mark.parametrize("method", list(ExplainMethod))
def test_explain_every_method_is_upsampled_normalised_and_deterministic(
    densenet: nn.Module, images: torch.Tensor, method: ExplainMethod
) -> None:
    explainer = Explainer(densenet, config=FAST, label_names=("no_finding", "opacity"))
    first = explainer.explain(images, method)
    second = explainer.explain(images, method)
    assert first.maps.shape == (2, 64, 64) and first.maps.dtype == np.float32
    assert float(first.maps.min()) >= 0.0 and float(first.maps.max()) <= 1.0
    assert np.array_equal(first.maps, second.maps)
    assert first.targets == second.targets
    assert first.probabilities.shape == (2, 2)
    np.testing.assert_allclose(first.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert first.target_label(0) in ("no_finding", "opacity")


def test_explain_batch_equals_one_by_one(densenet: nn.Module, images: torch.Tensor) -> None:
    explainer = Explainer(densenet)
    batch = explainer.explain(images, "gradcam", target=1)
    for index in range(len(images)):
        single = explainer.explain(images[index : index + 1], "gradcam", target=1)
        np.testing.assert_allclose(single.maps[0], batch.maps[index], atol=1e-5)
    assert batch.targets == (1, 1)


def test_explain_default_target_is_prediction_and_probabilities_match_model(
    densenet: nn.Module, images: torch.Tensor
) -> None:
    with torch.no_grad():
        logits = densenet(images)
    result = explain(densenet, images, "saliency")
    assert result.targets == tuple(int(t) for t in logits.argmax(dim=1))
    np.testing.assert_allclose(result.probabilities, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_explain_restores_model_state(images: torch.Tensor) -> None:
    model = _PlainCnn()
    model.train()
    model.head.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    # Other code in the same process (Lightning with deterministic=True) may have switched the
    # global flag on: explain must leave it as it found it, either way.
    initial = torch.are_deterministic_algorithms_enabled()
    try:
        for flag in (False, True):
            torch.use_deterministic_algorithms(flag)
            Explainer(model).explain(images, "gradcam")
            assert model.training
            assert [p.requires_grad for p in model.parameters()] == before
            assert torch.are_deterministic_algorithms_enabled() is flag
    finally:
        torch.use_deterministic_algorithms(initial)


def test_explain_single_output_model_uses_sigmoid(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _PlainCnn(outputs=1)
    result = Explainer(model, config=FAST).explain(images, "occlusion")
    with torch.no_grad():
        expected = torch.sigmoid(model(images)).numpy()
    assert result.targets == (0, 0)
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5)
    assert result.target_probability(1) == pytest.approx(float(expected[1, 0]), rel=1e-5)


def test_explain_rejects_bad_targets_and_shapes(densenet: nn.Module, images: torch.Tensor) -> None:
    explainer = Explainer(densenet)
    with pytest.raises(ExplainError):
        explainer.explain(images, "gradcam", target=5)
    with pytest.raises(ExplainError):
        explainer.explain(images, "gradcam", target=[0, 1, 1])
    with pytest.raises(ExplainError):
        explainer.explain(images[0], "gradcam")
    with pytest.raises(ValueError):
        explainer.explain(images, "guided-backprop")


@pytest.mark.parametrize(
    "method", [ExplainMethod.GRADCAM, ExplainMethod.HIRESCAM, ExplainMethod.SALIENCY, ExplainMethod.OCCLUSION]
)
def test_explain_maps_follow_a_planted_feature(images: torch.Tensor, method: ExplainMethod) -> None:
    """A model that only looks at the top-left quadrant: every map must sit there."""

    class QuadrantFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1, bias=False)
            nn.init.ones_(self.conv.weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros_like(x)
            mask[..., :32, :32] = 1.0
            return self.conv(x) * mask

    class QuadrantScore(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = QuadrantFeatures()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = self.features(x).mean(dim=(1, 2, 3))
            return torch.stack([-score, score], dim=1)

    config = ExplainConfig(
        target_layer="features",
        hirescam_layer="features",
        occlusion_window_fraction=0.25,
        occlusion_stride_fraction=0.25,
    )
    result = Explainer(QuadrantScore(), config=config).explain(images + 0.1, method, target=1)
    heat = result.maps[0]
    assert heat[:32, :32].mean() > 0.1
    assert heat[40:, 40:].max() == 0.0


def test_explain_settings_load_repository_default_and_reject_bad_files(tmp_path: Path) -> None:
    from training.explain import ExplainSettingsError, load_explain_settings

    settings = load_explain_settings()
    assert settings.sanity.max_spearman == 0.5 and settings.explain.ig_steps == 32
    custom = tmp_path / "explain.yaml"
    custom.write_text("sanity:\n  max_spearman: 0.3\n  method: saliency\n")
    loaded = load_explain_settings(custom)
    assert loaded.sanity.max_spearman == 0.3 and loaded.sanity.method is ExplainMethod.SALIENCY
    custom.write_text("sanity:\n  max_spearmann: 0.3\n")
    with pytest.raises(ExplainSettingsError):
        load_explain_settings(custom)
    custom.write_text("sanity: [unclosed\n")
    with pytest.raises(ExplainSettingsError):
        load_explain_settings(custom)
