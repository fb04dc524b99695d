"""The Typer side of :mod:`governance.auth.access`: every command checks its role first.

:func:`guard_typer_app` walks a Typer app (sub-apps included) and wraps each command's callback:
the wrapper authenticates the caller (``--token``, ``RADGATE_TOKEN`` or ``RADGATE_TOKEN_FILE``),
checks the command's entry in :data:`~governance.auth.access.COMMAND_ACCESS`, and only then
runs the command, with :func:`~governance.auth.access.acting_as` set to the caller. A command
without its own ``token`` parameter gets a ``--token`` option. Refusals print one line (no
token, no traceback) and exit 3 (not authenticated) or 4 (not allowed); refusals of a known
user are audited as ``<command>.denied``.
"""

from __future__ import annotations

import copy
import functools
import gc
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from typer.main import get_command_name
from typer.models import DefaultPlaceholder

from governance.cli_support import EXIT_FORBIDDEN, EXIT_UNAUTHENTICATED, TOKEN_HELP, fail

if TYPE_CHECKING:
    from governance.auth.roles import Principal

__all__ = [
    "EXIT_FORBIDDEN",
    "EXIT_UNAUTHENTICATED",
    "command_paths",
    "guard_typer_app",
    "pause_collector_until_authorized",
]

_MARK = "__radgate_command__"
_LOG = logging.getLogger(__name__)
_collector_paused = False


def pause_collector_until_authorized() -> None:
    """Pause Python's cyclic garbage collector until a guarded command has authenticated its
    caller (for the console script, at its start). Start-up (importing Typer, pydantic and
    SQLAlchemy, building the app, authenticating) makes hundreds of thousands of long-lived
    objects and next to no garbage cycles, and every collection walks them all: about a tenth
    of a light command's time. When the command starts, what exists is frozen (left out of
    later collections) and the collector runs again for the command's own work."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def _resume_collector() -> None:
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def _name(value: Any) -> str | None:
    return value.value if isinstance(value, DefaultPlaceholder) else value


def _walk(app: typer.Typer, prefix: tuple[str, ...]) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for info in app.registered_commands:
        if info.callback is None:
            continue
        name = _name(info.name) or get_command_name(info.callback.__name__)
        found.append((" ".join((*prefix, name)), info))
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        group_name = _name(group.name) or _name(sub.info.name)
        if not group_name:
            raise ValueError("every sub-app of the radgate CLI needs a name")
        found.extend(_walk(sub, (*prefix, group_name)))
    return found


def command_paths(app: typer.Typer) -> list[str]:
    """Every command of ``app`` as a space-separated path (``"model webhook serve"``)."""
    return [path for path, _ in _walk(app, ())]


def guard_typer_app(app: typer.Typer, _prefix: tuple[str, ...] = ()) -> typer.Typer:
    """Wrap every command of ``app`` (idempotent); returns ``app``.

    Sub-apps are replaced by guarded copies: the packages' own Typer instances stay as they
    are, so a package's tests that build their own app see the same commands whatever was
    imported before.
    """
    commands = []
    for info in app.registered_commands:
        callback = info.callback
        if callback is not None:
            path = " ".join((*_prefix, _name(info.name) or get_command_name(callback.__name__)))
            if getattr(callback, _MARK, None) != path:
                info = copy.copy(info)
                info.callback = _guarded(path, callback)
        commands.append(info)
    groups = []
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is not None:
            group_name = _name(group.name) or _name(sub.info.name)
            if not group_name:
                raise ValueError("every sub-app of the radgate CLI needs a name")
            group = copy.copy(group)
            group.typer_instance = guard_typer_app(copy.copy(sub), (*_prefix, group_name))
        groups.append(group)
    app.registered_commands = commands
    app.registered_groups = groups
    return app


def _audit_refusal(command: str, principal_name: str, role: str, reason: str) -> None:
    from governance.audit import record

    try:
        record(
            principal_name,
            command.replace(" ", ".") + ".denied",
            f"command:{command}",
            {"reason": reason[:200]},
            role=role,
        )
    except Exception as exc:  # the refusal stands even if it cannot be recorded
        _LOG.warning("refusal of %r not audited: %s", command, type(exc).__name__)


def _authorize(command: str, token: str | None) -> Principal | None:
    # Imported when a command runs, not when the CLI is built: the catalog and its settings
    # are not needed for `radgate --help`.
    from governance.auth.access import authorize_command
    from governance.auth.roles import AuthenticationError, BootstrapError, PermissionDenied

    try:
        return authorize_command(command, token)
    except AuthenticationError as exc:
        raise fail(str(exc), EXIT_UNAUTHENTICATED) from None
    except BootstrapError as exc:
        raise fail(str(exc), EXIT_FORBIDDEN) from None
    except PermissionDenied as exc:
        from governance.auth.users import authenticate, resolve_token

        try:
            who = authenticate(resolve_token(token))
            _audit_refusal(command, who.name, who.role.value, str(exc))
        except AuthenticationError:
            pass
        raise fail(str(exc), EXIT_FORBIDDEN) from None


def _guarded(command: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    try:
        signature = inspect.signature(callback, eval_str=True)
    except NameError:  # an annotation imported only for type checking
        signature = inspect.signature(callback)
    owns_token = "token" in signature.parameters

    @functools.wraps(callback)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = kwargs.get("token") if owns_token else kwargs.pop("token", None)
        principal = _authorize(command, token)
        _resume_collector()
        from governance.auth.access import acting_as

        with acting_as(principal):
            return callback(*args, **kwargs)

    if not owns_token:
        token_param = inspect.Parameter(
            "token",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--token", help=TOKEN_HELP),
            annotation=str | None,
        )
        guarded.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), token_param]
        )
        guarded.__annotations__ = {**getattr(callback, "__annotations__", {}), "token": str | None}
    setattr(guarded, _MARK, command)
    return guarded
