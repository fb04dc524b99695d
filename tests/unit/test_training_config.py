"""Training configs: validation names the bad field, overrides, shipped configs are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from training.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.data.preprocessing().spatial_size == tuple(config.data.spatial_size)


def test_unknown_and_invalid_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump({"name": "x", "data": {"dataset": "d", "batch_sze": 4}, "model": {"network": "vgg"}})
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "data.batch_sze: unknown field" in message
    assert "model.network" in message


def test_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"dataset": "d"}}))
    config = load_config(path, ["optim.lr=0.01", "run.workers=2", "data.spatial_size=[16, 16]"])
    assert config.optim.lr == 0.01 and config.run.workers == 2 and config.data.spatial_size == (16, 16)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["optim.lr"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def _app():  # type: ignore[no-untyped-def]
    import typer

    from imaging.dataset_cli import register as register_datasets
    from training.cli import register

    app = typer.Typer()
    register(app)
    register_datasets(app)
    return app


def test_cli_bad_config_and_missing_dataset_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {dataset: d, sizee: 3}\n")
    result = CliRunner().invoke(_app(), ["train", str(bad)])
    assert result.exit_code == 2
    assert "data.sizee: unknown field" in result.output and "Traceback" not in result.output
    good = tmp_path / "good.yaml"
    good.write_text("name: x\ndata: {dataset: no-such-dataset}\n")
    result = CliRunner().invoke(_app(), ["train", str(good)])
    assert result.exit_code == 2
    assert "no dataset version 'no-such-dataset'" in result.output and "Traceback" not in result.output


def test_cli_dataset_list_and_show_when_empty() -> None:
    result = CliRunner().invoke(_app(), ["dataset", "list"])
    assert result.exit_code == 0 and "no dataset versions" in result.output
    result = CliRunner().invoke(_app(), ["dataset", "show", "nothing"])
    assert result.exit_code == 2 and "no dataset version" in result.output
