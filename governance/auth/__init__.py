"""Identities, roles and bearer tokens.

Library API: :func:`authenticate` (token -> :class:`Principal`), :func:`require_role`,
:func:`principal_from_env_or_token` (CLI: ``--token`` or ``RADGATE_TOKEN``),
:func:`fastapi_dependency` (serving), :func:`add_user` / :func:`list_users` / :func:`revoke_user`,
:data:`COMMAND_ACCESS` (the role each ``radgate`` command needs) and :func:`acting_as`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from governance.auth.access import (
        COMMAND_ACCESS,
        Access,
        AccessMode,
        UnlistedCommand,
        access_for,
        acting_as,
        acting_principal,
        authorize_command,
    )
    from governance.auth.roles import (
        AuthenticationError,
        AuthError,
        BootstrapError,
        InvalidToken,
        MissingToken,
        PermissionDenied,
        Principal,
        RevokedToken,
        Role,
        UnknownUser,
        UserExists,
        require_role,
    )
    from governance.auth.users import (
        TOKEN_ENV,
        TOKEN_FILE_ENV,
        TOKEN_PREFIX,
        IssuedToken,
        User,
        UserInfo,
        add_user,
        authenticate,
        has_users,
        hash_token,
        list_users,
        principal_from_env_or_token,
        resolve_token,
        revoke_user,
        rotate_token,
    )


def fastapi_dependency(*roles: Role | str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency factory (see :mod:`governance.auth.http`); imported lazily so the
    CLI does not pay for FastAPI."""
    from governance.auth.http import fastapi_dependency as factory

    return factory(*roles)


__all__ = [
    "COMMAND_ACCESS",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TOKEN_PREFIX",
    "Access",
    "AccessMode",
    "AuthError",
    "AuthenticationError",
    "BootstrapError",
    "InvalidToken",
    "IssuedToken",
    "MissingToken",
    "PermissionDenied",
    "Principal",
    "RevokedToken",
    "Role",
    "UnknownUser",
    "UnlistedCommand",
    "User",
    "UserExists",
    "UserInfo",
    "access_for",
    "acting_as",
    "acting_principal",
    "add_user",
    "authenticate",
    "authorize_command",
    "current_actor",
    "fastapi_dependency",
    "has_users",
    "hash_token",
    "list_users",
    "principal_from_env_or_token",
    "require_role",
    "resolve_token",
    "revoke_user",
    "rotate_token",
]


def current_actor() -> tuple[str, str]:
    """(actor, role) for audit entries of local work: the caller of the running command (see
    :func:`acting_as`), else the ``RADGATE_TOKEN`` holder if the token is valid, else
    ``local:<os user>`` with no role (library use outside the CLI)."""
    import getpass

    from governance.auth.access import acting_principal
    from governance.auth.roles import AuthError
    from governance.auth.users import principal_from_env_or_token

    acting = acting_principal()
    if acting is not None:
        return acting.name, acting.role.value
    try:
        principal = principal_from_env_or_token(None)
    except AuthError:
        return f"local:{getpass.getuser()}", ""
    return principal.name, principal.role.value


__getattr__, __dir__ = lazy_exports(__name__, __file__)
