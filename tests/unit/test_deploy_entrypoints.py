"""Every command the deployment files run in one of RadGate's images resolves against the code.

The files under ``docker/`` name Python entry points that no linter checks: the RayService's
``import_path``, the RayJob's ``entrypoint``, KubeRay's ``ray start`` parameters, container
``command``/``args`` in the Kubernetes manifests and ``docker/compose.yaml``, and each image's own
ENTRYPOINT/CMD/HEALTHCHECK. Here each one is resolved as the container would run it: the
executable must be a console script of the installed distributions (radgate, ray, serve, mlflow)
or a file the image copies in, its sub-commands and options must parse with the real Click/Typer
command (nothing is invoked), paths inside the image must map to files of this repository, and an
``import_path`` must import and build a Ray Serve application from its ``args``.
Third-party images (PostgreSQL, MinIO, Triton, Orthanc) are out of scope: their commands are theirs.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests.unit.test_deploy_static import DOCKER, REPO, _cluster_specs, _instructions
from tests.unit.test_deploy_static import _all_manifests as _manifests

OUR_IMAGE = re.compile(r"^(localhost/)?radgate/(?P<name>[a-z-]+)(:|$)")
# The image that each service's name in docker/compose.yaml runs when `image:` names ours.
ENTRYPOINT_WRAPPER = "/usr/local/bin/radgate-entrypoint"


@dataclass(frozen=True)
class Command:
    where: str
    image: str  # our Dockerfile's stem: gateway, serving, trainer, ui, mlflow
    argv: tuple[str, ...]


def _image_name(image: str) -> str | None:
    match = OUR_IMAGE.match(image)
    return match.group("name") if match else None


# --- each image's own ENTRYPOINT / CMD / HEALTHCHECK and the files it copies ------------------------


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


@dataclass(frozen=True)
class Image:
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    health: tuple[str, ...]
    files: dict[str, Path]  # absolute path in the image -> the repository file copied there
    workdir_app: str  # where the repository's tree lands (COPY radgate ./radgate under this)


def _image(name: str) -> Image:
    dockerfile = DOCKER / f"{name}.Dockerfile"
    assert dockerfile.is_file(), f"no Dockerfile for radgate/{name}"
    entrypoint: list[str] = []
    cmd: list[str] = []
    health: list[str] = []
    files: dict[str, Path] = {}
    workdir = "/"
    app_root = ""
    for keyword, rest in _instructions(dockerfile):
        if keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif keyword == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
        elif keyword == "CMD":
            cmd = _exec_form(rest)
        elif keyword == "HEALTHCHECK":
            health = _exec_form(rest.split(" CMD ", 1)[1])
        elif keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            *sources, target = words
            for source in sources:
                local = REPO / source
                dest = (
                    target if target.startswith("/") else f"{workdir.rstrip('/')}/{target.removeprefix('./')}"
                )
                if dest.endswith("/") or len(sources) > 1:
                    dest = f"{dest.rstrip('/')}/{Path(source).name}"
                files[dest.rstrip("/")] = local
                if source == "radgate":
                    app_root = str(Path(dest).parent)
    return Image(tuple(entrypoint), tuple(cmd), tuple(health), files, app_root)


def _local_path(image: Image, path: str, mounts: dict[str, Path]) -> Path | None:
    """The repository file behind ``path`` inside the container, or None for a runtime path."""
    for table in (mounts, image.files):
        for inside, local in sorted(table.items(), key=lambda kv: -len(kv[0])):
            if path == inside:
                return local
            if path.startswith(inside + "/"):
                return local / path.removeprefix(inside + "/")
    if image.workdir_app and path.startswith(image.workdir_app + "/"):
        return REPO / path.removeprefix(image.workdir_app + "/")
    return None


# --- resolving an argv against the installed console scripts ---------------------------------------


def _click_command(executable: str) -> Any:
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    assert executable in scripts, f"{executable!r} is not a console script of any installed distribution"
    target = scripts[executable].load()
    if isinstance(target, click.Command):
        return target
    # A main() wrapper (radgate, ray): the Click group or Typer app its module defines.
    module = import_module(target.__module__)
    for attribute in ("cli", "app"):
        found = getattr(module, attribute, None)
        if isinstance(found, click.Command):
            return found
        if found is not None and type(found).__name__ == "Typer":
            import typer.main

            return typer.main.get_command(found)
    raise AssertionError(f"{executable}: no Click command behind {scripts[executable].value}")


def _parse(command: Any, name: str, args: list[str], parent: Any = None) -> None:
    """Parse ``args`` the way Click would before invoking (sub-commands included); invoke nothing."""
    # Typer carries its own copy of Click: its classes are not click's, so go by behaviour.
    try:
        ctx = command.make_context(name, list(args), parent=parent)
    except Exception as done:  # --help and other eager options end parsing with Exit(0)
        if type(done).__name__ != "Exit":
            raise
        assert getattr(done, "exit_code", None) == 0, f"{name} {args}: {done!r}"
        return
    if hasattr(command, "resolve_command"):  # a group: parse the sub-command too
        rest = [*ctx._protected_args, *ctx.args]
        assert rest, f"{name}: no sub-command given"
        sub_name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None and sub_name is not None, f"{name}: unknown sub-command {rest[0]!r}"
        _parse(sub, sub_name, sub_args, ctx)


def _resolve(command: Command, mounts: dict[str, Path] | None = None) -> None:
    image = _image(command.image)
    mounts = mounts or {}
    argv = list(command.argv)
    if argv and argv[0] == ENTRYPOINT_WRAPPER:
        assert (DOCKER / "entrypoint.sh").is_file() and image.files.get(ENTRYPOINT_WRAPPER), command.where
        argv = argv[1:]
    assert argv, f"{command.where}: empty command"
    # Files of this repository named inside the container exist (configs, scripts).
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if value.startswith("/") and not value.startswith(("/tmp", "/data", "/models", "/dev")):
            local = _local_path(image, value, mounts)
            if local is not None:
                assert local.exists(), f"{command.where}: {value} -> {local} does not exist"
    if argv[0] in {"python", "python3"} and argv[1:2] == ["-c"]:
        compile(argv[2], command.where, "exec")  # a program on the command line (admin's wait)
        return
    if argv[0] in {"python", "python3"}:
        script = _local_path(image, argv[1], mounts)
        assert script is not None and script.is_file(), f"{command.where}: {argv[1]} is not in the image"
        return
    if argv[0].startswith("/"):
        script = _local_path(image, argv[0], mounts)
        assert script is not None and script.is_file(), f"{command.where}: {argv[0]} is not in the image"
        return
    _parse(_click_command(argv[0]), argv[0], argv[1:])


# --- where the commands are ----------------------------------------------------------------------


def _compose_commands() -> list[tuple[Command, dict[str, Path]]]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    out = []
    for name, service in compose["services"].items():
        image_name = _image_name(str(service.get("image", "")))
        if image_name is None:
            continue
        image = _image(image_name)
        mounts = {}
        for volume in service.get("volumes", []):
            source, _, rest = str(volume).partition(":")
            if source.startswith("."):
                mounts[rest.split(":")[0]] = (DOCKER / source).resolve()
        command = service.get("command")
        argv = shlex.split(command) if isinstance(command, str) else list(command or image.cmd)
        entrypoint = service.get("entrypoint")
        prefix = (
            shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint or image.entrypoint)
        )
        out.append((Command(f"compose {name}", image_name, tuple(prefix + argv)), mounts))
        health = (service.get("healthcheck") or {}).get("test")
        if isinstance(health, list) and health and health[0] == "CMD":
            out.append((Command(f"compose {name} healthcheck", image_name, tuple(health[1:])), mounts))
    return out


def _pods() -> list[tuple[str, dict[str, Any]]]:
    pods = [
        (f"{path.name}:{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for path, doc in _manifests()
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}
    ]
    for where, cluster in _cluster_specs():
        pods.append((f"{where} head", cluster["headGroupSpec"]["template"]["spec"]))
        pods += [(f"{where} {g['groupName']}", g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
    return pods


def _k8s_commands() -> list[Command]:
    out = []
    for where, pod in _pods():
        for container in pod["containers"]:
            image_name = _image_name(container["image"])
            if image_name is None:
                continue
            image = _image(image_name)
            entry = container.get("command") or list(image.entrypoint)
            args = container.get("args") or ([] if container.get("command") else list(image.cmd))
            out.append(Command(f"{where} {container['name']}", image_name, tuple(entry + args)))
    return out


def _ray_start_argv(params: dict[str, Any], head: bool) -> list[str]:
    """The ``ray start`` that KubeRay runs for a group: its rayStartParams as ``--key=value``."""
    argv = ["start", "--block"] + (["--head"] if head else ["--address=head:6379"])
    return argv + [f"--{key}={value}" for key, value in params.items()]


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command,mounts", _compose_commands(), ids=lambda c: getattr(c, "where", ""))
def test_compose_commands_resolve(command: Command, mounts: dict[str, Path]) -> None:
    _resolve(command, mounts)


@pytest.mark.parametrize("command", _k8s_commands(), ids=lambda c: c.where)
def test_kubernetes_container_commands_resolve(command: Command) -> None:
    _resolve(command)


@pytest.mark.parametrize(
    "image", sorted(p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile"))
)
def test_each_image_default_command_and_healthcheck_resolve(image: str) -> None:
    spec = _image(image)
    if spec.cmd or spec.entrypoint:
        _resolve(Command(f"{image} ENTRYPOINT+CMD", image, spec.entrypoint + spec.cmd))
    assert spec.health, f"{image}: no HEALTHCHECK"
    _resolve(Command(f"{image} HEALTHCHECK", image, spec.health))


@pytest.mark.parametrize("where,cluster", _cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_ray_start_parameters_are_ray_start_options(where: str, cluster: dict[str, Any]) -> None:
    ray_cli = _click_command("ray")
    _parse(ray_cli, "ray", _ray_start_argv(cluster["headGroupSpec"].get("rayStartParams", {}), head=True))
    for group in cluster["workerGroupSpecs"]:
        _parse(ray_cli, "ray", _ray_start_argv(group.get("rayStartParams", {}), head=False))


def test_rayjob_entrypoints_resolve() -> None:
    jobs = [(path, doc) for path, doc in _manifests() if doc["kind"] == "RayJob"]
    assert jobs
    for path, job in jobs:
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        image_name = _image_name(head["image"])
        assert image_name, f"{path.name}: the job's driver runs in {head['image']}, not one of ours"
        _resolve(
            Command(f"{path.name} entrypoint", image_name, tuple(shlex.split(job["spec"]["entrypoint"])))
        )


def test_rayservice_import_paths_build_a_serve_application(tmp_path: Path) -> None:
    """Resolved as Ray Serve resolves it (import, then call the builder with the validated ``args``),
    with the ConfigMap the pods mount at the ``args.config`` path."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    services = [(path, doc) for path, doc in _manifests() if doc["kind"] == "RayService"]
    maps = {doc["metadata"]["name"]: doc["data"] for _, doc in _manifests() if doc["kind"] == "ConfigMap"}
    assert services
    for path, service in services:
        pod = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        mounted = {
            mounts[v["name"]]: maps[v["configMap"]["name"]] for v in pod["volumes"] if "configMap" in v
        }
        for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]:
            module_name, _, attribute = app["import_path"].partition(":")
            builder = getattr(import_module(module_name), attribute, None)
            assert callable(builder), f"{path.name}: {app['import_path']} does not resolve"
            args = dict(app.get("args") or {})
            if "config" in args:  # the file the pod sees, from the ConfigMap mounted there
                inside = Path(args["config"])
                data = mounted[str(inside.parent)][inside.name]
                local = tmp_path / inside.name
                local.write_text(data)
                args["config"] = str(local)
            built = call_user_app_builder_with_args_if_necessary(builder, args)
            assert isinstance(built, Application), f"{path.name}: {app['import_path']} built {type(built)}"


def test_the_app_builder_refuses_bad_args_with_a_clear_error(tmp_path: Path) -> None:
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from serving.config import ServeConfigError
    from serving.deploy import app_builder as typed_builder

    app_builder: Any = typed_builder

    with pytest.raises(ServeConfigError, match="cannot read serving config"):
        call_user_app_builder_with_args_if_necessary(app_builder, {"config": str(tmp_path / "missing.yaml")})
    with pytest.raises(Exception, match=r"extra|config"):
        call_user_app_builder_with_args_if_necessary(app_builder, {"config": "x", "unexpected": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: x, backend: nowhere}]\n")
    with pytest.raises(ServeConfigError, match="invalid serving config"):
        call_user_app_builder_with_args_if_necessary(app_builder, {"config": str(bad)})


def test_a_wrong_import_path_or_option_fails_the_resolver() -> None:
    """The resolver itself can fail: a misspelt sub-command, option or config path is caught."""
    with pytest.raises(Exception, match="No such command 'trian'"):
        _resolve(Command("bad sub-command", "trainer", ("radgate", "trian", "--help")))
    with pytest.raises(Exception, match="No such option"):
        _resolve(Command("bad radgate option", "gateway", ("radgate", "gateway", "--confg", "x")))
    with pytest.raises(click.exceptions.NoSuchOption):
        _resolve(Command("bad option", "trainer", ("ray", "start", "--head", "--num-gpu=0")))
    with pytest.raises(AssertionError, match="does not exist"):
        _resolve(
            Command("bad path", "trainer", ("radgate", "train", "/home/ray/app/configs/train/nope.yaml"))
        )
    with pytest.raises(AssertionError, match="console script"):
        _resolve(Command("bad executable", "serving", ("radgat", "serve")))
