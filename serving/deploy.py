"""Ray Serve application builder for declarative deployments (``serve deploy``, KubeRay RayService).

A Serve config names ``import_path: serving.deploy:app_builder`` with ``args: {config: PATH}``;
Ray Serve validates ``args`` into :class:`AppArgs` (the annotation of the builder's argument) and
calls the builder, which reads the RadGate serving config at ``PATH`` (the same schema as
``configs/serve/*.yaml``) and returns the bound application of :func:`serving.app.build_app`.

In this mode Ray Serve's HTTP proxy listens where the Serve config's ``http_options`` say; the
serving config's ``host``/``port`` are used only by ``radgate serve`` (:func:`serving.app.run`).
"""

from pathlib import Path
from typing import Any

from governance.strict import StrictModel
from serving.app import build_app
from serving.config import load_serve_config

__all__ = ["AppArgs", "app_builder"]


class AppArgs(StrictModel):
    """The ``args`` of the application in a Serve config."""

    config: Path
    """The RadGate serving config (YAML) inside the Ray nodes, e.g. a mounted ConfigMap."""


def app_builder(args: AppArgs) -> Any:
    """Build the RadGate Serve application from ``args.config``.

    An unreadable or invalid config raises :class:`serving.config.ServeConfigError` naming the
    file, which Ray Serve reports as the application's deploy failure."""
    return build_app(load_serve_config(args.config))
