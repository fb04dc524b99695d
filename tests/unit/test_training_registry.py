"""Registry helpers: model references, artifact tree hash, preprocessing round trip, networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from governance.tags import artifact_sha256
from imaging.demo_data import write_demo_studies
from training.networks import NetworkFamily, build_network, gradcam_layer
from training.preprocess import PreprocessingSpec, preprocess_dicom
from training.registry import ModelNotFoundError, load_model, parse_model_ref


def test_parse_model_ref() -> None:
    assert parse_model_ref("chest@production") == ("chest", "production", None)
    assert parse_model_ref("models:/chest/3") == ("chest", None, "3")
    with pytest.raises(ModelNotFoundError):
        parse_model_ref("chest")


def test_artifact_hash_covers_content_and_names_but_not_registration_meta(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.pth").write_bytes(b"weights")
    (tmp_path / "MLmodel").write_text("flavors: {}")
    digest = artifact_sha256(tmp_path)
    (tmp_path / "registered_model_meta").write_text("model_name: x\nmodel_version: 1\n")
    assert artifact_sha256(tmp_path) == digest
    (tmp_path / "data" / "model.pth").write_bytes(b"weightz")
    assert artifact_sha256(tmp_path) != digest


def test_load_model_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="no registered model version"):
        load_model("nothing@production")


def test_preprocessing_round_trip_and_output(tmp_path: Path) -> None:
    spec = PreprocessingSpec(spatial_size=(24, 24), augment={"flip_prob": 0.5})
    assert PreprocessingSpec.from_dict(spec.to_dict()) == spec
    demo = write_demo_studies(tmp_path, patients=1, images_per_patient=1, size=32)
    from_path = preprocess_dicom(demo.files[0], spec)
    from_bytes = preprocess_dicom(demo.files[0].read_bytes(), spec)
    assert from_path.shape == (1, 1, 24, 24) and torch.equal(from_path, from_bytes)
    assert float(from_path.min()) >= 0.0 and float(from_path.max()) <= 1.0


@pytest.mark.parametrize("family", [NetworkFamily.RESNET18, NetworkFamily.DENSENET121])
def test_networks_and_gradcam_layers(family: NetworkFamily) -> None:
    net = build_network(family, num_classes=2).eval()
    assert gradcam_layer(family) in dict(net.named_modules())
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 2)
