"""One table of network families: training builds from it, explanation resolves the same layer."""

from __future__ import annotations

import pytest
import torch

from training.explain.core import ExplainMethod
from training.explain.layers import detect_family, overlay_method, resolve_target_layer
from training.networks import NETWORKS, NetworkFamily, build_network, gradcam_layer


@pytest.mark.parametrize("family", list(NetworkFamily))
def test_every_family_builds_and_explains_on_its_table_layer(family: NetworkFamily) -> None:
    spec = NETWORKS[family]
    net = build_network(family, num_classes=2).eval()
    size = 4 * spec.downsampling
    images = torch.rand(2, 1, size, size)
    features: list[torch.Tensor] = []
    layer = net.get_submodule(gradcam_layer(family))
    handle = layer.register_forward_hook(lambda _m, _i, out: features.append(out))
    with torch.no_grad():
        assert net(images).shape == (2, 2)
    handle.remove()
    assert tuple(features[0].shape[2:]) == (spec.gradcam_cells(size),) * 2  # downsampling as stated
    detected, prefix = detect_family(net)
    assert detected is not None and NETWORKS[detected].gradcam_layer == spec.gradcam_layer and prefix == ""
    assert resolve_target_layer(net, images)[0] == spec.gradcam_layer
    hires = resolve_target_layer(net, images, method="hirescam")[0]
    assert hires == spec.cam_layer("hirescam") == (spec.hirescam_layer or spec.gradcam_layer)
    assert ExplainMethod(overlay_method(net)).value == spec.overlay


def test_resnet10_lite_shows_hirescam_on_its_finer_layer_and_checks_that_method() -> None:
    """The demo family's overlay is HiResCAM on layer2 (32x32 at 128 px); its sanity check and
    the CLI default follow the table, a Grad-CAM request still hooks layer3."""
    from training.explain.core import Explainer
    from training.explain.sanity import SanityConfig, run_randomization_check

    torch.manual_seed(0)
    net = build_network(NetworkFamily.RESNET10_LITE, num_classes=2).eval()
    images = torch.rand(2, 1, 64, 64)
    assert overlay_method(net) == "hirescam"
    hires = Explainer(net).explain(images, ExplainMethod.HIRESCAM, 1)
    assert hires.target_layer == "layer2" and hires.maps.shape == (2, 64, 64)
    assert Explainer(net).explain(images, ExplainMethod.GRADCAM, 1).target_layer == "layer3"
    result = run_randomization_check(
        net, images, config=SanityConfig(cascade=False, min_faithfulness_gap=None), targets=[1, 1]
    )
    assert result.method is ExplainMethod.HIRESCAM
    assert overlay_method(torch.nn.Conv2d(1, 1, 1)) == "gradcam"  # not in the table


def test_the_explain_package_has_no_table_of_its_own() -> None:
    import training.explain.layers as layers

    assert layers.NetworkFamily is NetworkFamily
    assert not [name for name in vars(layers) if name.upper().endswith("_LAYERS")]
