"""Identities, roles and bearer tokens.

Library API: :func:`authenticate` (token -> :class:`Principal`), :func:`require_role`,
:func:`principal_from_env_or_token` (CLI: ``--token`` or ``RADGATE_TOKEN``),
:func:`fastapi_dependency` (serving), :func:`add_user` / :func:`list_users` / :func:`revoke_user`.
"""

from collections.abc import Callable

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
    TOKEN_PREFIX,
    IssuedToken,
    User,
    UserInfo,
    add_user,
    authenticate,
    hash_token,
    list_users,
    principal_from_env_or_token,
    revoke_user,
    rotate_token,
)


def fastapi_dependency(*roles: Role | str) -> Callable[..., Principal]:
    """FastAPI dependency factory (see :mod:`governance.auth.http`); imported lazily so the
    CLI does not pay for FastAPI."""
    from governance.auth.http import fastapi_dependency as factory

    return factory(*roles)


__all__ = [
    "TOKEN_ENV",
    "TOKEN_PREFIX",
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
    "User",
    "UserExists",
    "UserInfo",
    "add_user",
    "authenticate",
    "current_actor",
    "fastapi_dependency",
    "hash_token",
    "list_users",
    "principal_from_env_or_token",
    "require_role",
    "revoke_user",
    "rotate_token",
]


def current_actor() -> tuple[str, str]:
    """(actor, role) for audit entries of local commands: the ``RADGATE_TOKEN`` holder if the
    token is valid, else ``local:<os user>`` with no role (commands that need no role)."""
    import getpass

    try:
        principal = principal_from_env_or_token(None)
    except AuthError:
        return f"local:{getpass.getuser()}", ""
    return principal.name, principal.role.value
