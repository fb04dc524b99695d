"""One table of network families: training builds from it, explanation resolves the same layer."""

from __future__ import annotations

import pytest
import torch

from training.explain.layers import detect_family, resolve_target_layer
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


def test_the_explain_package_has_no_table_of_its_own() -> None:
    import training.explain.layers as layers

    assert layers.NetworkFamily is NetworkFamily
    assert not [name for name in vars(layers) if name.upper().endswith("_LAYERS")]
