"""Serving config validation and the CLI's clean errors (no Ray started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from serving.config import Backend, ServeConfigError, load_serve_config


def _app() -> typer.Typer:
    from serving.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    register(app)
    return app


def test_shipped_configs_validate() -> None:
    default = load_serve_config()
    assert default.models[0].ref == "chest-opacity@production"
    assert default.models[0].backend is Backend.INPROCESS
    repo = Path(__file__).resolve().parents[2]
    triton = load_serve_config(repo / "configs" / "serve" / "triton.yaml")
    assert triton.models[0].backend is Backend.TRITON


def test_pinned_version_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("models:\n  - {name: m, version: '3', autoscaling: {min_replicas: 1, max_replicas: 3}}\n")
    config = load_serve_config(path, port=9001)
    assert config.port == 9001 and config.models[0].ref == "m/3"
    assert config.models[0].autoscaling is not None and config.models[0].autoscaling.max_replicas == 3
    assert not config.models[0].colocated  # autoscaled: a deployment of its own


def test_colocation_default_and_opt_out(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "models:\n  - {name: a}\n  - {name: b, colocate: false}\n  - {name: c, num_gpus: 1}\n"
        "  - {name: d, num_replicas: 2}\n"
    )
    colocated = {m.name: m.colocated for m in load_serve_config(path).models}
    assert colocated == {"a": True, "b": False, "c": False, "d": False}


@pytest.mark.parametrize(
    "text",
    [
        "models: []\n",
        "models:\n  - {name: m, alias: production, version: '2'}\n",
        "models:\n  - {name: m}\n  - {name: m}\n",
        "gate_ttl_s: 60\nmodels:\n  - {name: m}\n",  # revocation must take effect within 10 s
        "models:\n  - {name: m, colocate: true, autoscaling: {max_replicas: 2}}\n",
        "models:\n  - {name: m, colocate: true, num_gpus: 1}\n",
        "models: [unclosed\n",
        "- a list\n",
    ],
)
def test_invalid_configs_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(ServeConfigError):
        load_serve_config(path)


def test_cli_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(_app(), ["serve", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read serving config" in missing.output
    assert "Traceback" not in missing.output
    bad_backend = runner.invoke(
        _app(), ["triton", "export", "m@production", "--repo", str(tmp_path), "--backend", "x"]
    )
    assert bad_backend.exit_code == 2 and "unknown backend" in bad_backend.output
    help_text = runner.invoke(_app(), ["serve", "--help"]).output
    assert "Ray Serve" in help_text


def test_a_local_ray_runs_replica_code_on_the_replicas_main_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``start_ray`` (a local Ray) has Ray Serve run the replicas' code on their main event loop
    (no thread hop per request); an operator's own setting wins; a remote Ray is left alone."""
    import ray

    from serving import app
    from serving.config import ServeConfig

    started: list[dict[str, object]] = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: started.append(kwargs))
    monkeypatch.setattr(app, "_direct_ingress_port", None)
    flag = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"
    config = ServeConfig.model_validate({"port": 18123, "models": [{"name": "m"}]})
    saved = dict(os.environ)  # start_ray sets the direct-ingress variables for good
    try:
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.pop(flag, None)
        app.start_ray(config)
        assert started and os.environ[flag] == "0"
        os.environ[flag] = "1"
        app.start_ray(config)
        assert os.environ[flag] == "1"
        del os.environ[flag]
        os.environ["RAY_ADDRESS"] = "ray://elsewhere:10001"
        app.start_ray(config)
        assert flag not in os.environ and len(started) == 3
    finally:
        os.environ.clear()
        os.environ.update(saved)
