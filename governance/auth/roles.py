"""Roles, the authenticated principal and the errors of authentication and authorisation."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AuthError",
    "AuthenticationError",
    "BootstrapError",
    "InvalidToken",
    "MissingToken",
    "PermissionDenied",
    "Principal",
    "RevokedToken",
    "Role",
    "UnknownUser",
    "UserExists",
    "require_role",
]


class Role(enum.StrEnum):
    """What a user may do. Roles are not hierarchical: ``admin`` manages users, it does not
    approve models or re-identify patients (separation of duties)."""

    ADMIN = "admin"
    DATA_STEWARD = "data-steward"
    ML_ENGINEER = "ml-engineer"
    CLINICAL_REVIEWER = "clinical-reviewer"
    PACS_CLIENT = "pacs-client"
    HONEST_BROKER = "honest-broker"
    AUDITOR = "auditor"

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        try:
            return cls(value)
        except ValueError as exc:
            allowed = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown role {value!r} (allowed: {allowed})") from exc


class AuthError(Exception):
    """Base class of every authentication or authorisation failure."""


class AuthenticationError(AuthError):
    """The caller could not be identified (HTTP 401)."""


class MissingToken(AuthenticationError):
    """No token was given (neither ``--token`` nor ``RADGATE_TOKEN`` nor a Bearer header)."""


class InvalidToken(AuthenticationError):
    """The token is malformed or matches no user."""


class RevokedToken(AuthenticationError):
    """The token belonged to a user whose access was revoked."""


class PermissionDenied(AuthError):
    """The caller is known but its role does not allow the action (HTTP 403)."""


class BootstrapError(AuthError):
    """Only the very first user may be created without a token, and only as admin."""


class UserExists(AuthError):
    """A user with that name already exists."""


class UnknownUser(AuthError):
    """No user with that name."""


@dataclass(frozen=True)
class Principal:
    """An authenticated user: what audit entries name as actor and role checks look at."""

    name: str
    role: Role
    user_id: int

    def has_role(self, *roles: Role | str) -> bool:
        return self.role in {Role.parse(r) for r in roles}


def require_role(principal: Principal, *roles: Role | str) -> Principal:
    """Return ``principal`` if its role is one of ``roles``, else raise :class:`PermissionDenied`."""
    wanted = _roles(roles)
    if not wanted:
        raise ValueError("require_role needs at least one role")
    if principal.role not in wanted:
        names = ", ".join(sorted(r.value for r in wanted))
        raise PermissionDenied(f"user {principal.name!r} ({principal.role.value}) needs role: {names}")
    return principal


def _roles(roles: Iterable[Role | str]) -> set[Role]:
    return {Role.parse(r) for r in roles}
