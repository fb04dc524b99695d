"""Users and their bearer tokens, stored in the catalog.

A token is ``rg_`` + 43 url-safe characters (256 random bits). Only its SHA-256 is stored:
the database alone cannot be used to act as anyone. Tokens are shown once, at creation.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, bindparam, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from governance.auth.roles import (
    BootstrapError,
    InvalidToken,
    MissingToken,
    Principal,
    RevokedToken,
    Role,
    UnknownUser,
    UserExists,
    require_role,
)
from governance.catalog.db import Catalog, open_catalog
from governance.catalog.models import Base, utcnow

__all__ = [
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "TOKEN_PREFIX",
    "IssuedToken",
    "User",
    "UserInfo",
    "add_user",
    "authenticate",
    "has_users",
    "hash_token",
    "list_users",
    "principal_from_env_or_token",
    "resolve_token",
    "revoke_user",
    "rotate_token",
]

TOKEN_PREFIX = "rg_"
TOKEN_ENV = "RADGATE_TOKEN"
TOKEN_FILE_ENV = "RADGATE_TOKEN_FILE"
_NAME_MAX = 64


class User(Base):
    """A person or a service (a PACS, the serving app) known to RadGate."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(_NAME_MAX), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(_NAME_MAX))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class UserInfo:
    """What may be shown about a user (never the token or its hash)."""

    name: str
    role: Role
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created user and its token (the only time the token exists in clear)."""

    user: UserInfo
    token: str = ""

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"IssuedToken(user={self.user!r}, token='***')"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _info(row: User) -> UserInfo:
    return UserInfo(row.name, Role(row.role), row.created_by, row.created_at, row.revoked_at)


def _validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > _NAME_MAX or not all(c.isalnum() or c in "-_.@" for c in name):
        raise ValueError(f"user names are 1-{_NAME_MAX} characters of letters, digits and - _ . @")
    return name


#: The columns authentication needs, by the token's hash (an indexed unique column).
_BY_TOKEN = select(User.id, User.name, User.role, User.revoked_at).where(
    User.token_sha256 == bindparam("digest")
)


def authenticate(token: str | None, *, catalog: Catalog | None = None) -> Principal:
    """The principal owning ``token``; raises :class:`MissingToken`, :class:`InvalidToken` or
    :class:`RevokedToken`. The user's row is read at every call (no cache): a revoked or
    rotated token is refused at once, whichever process revoked it."""
    if not token:
        raise MissingToken(f"no token: pass --token or set {TOKEN_ENV} (or {TOKEN_FILE_ENV})")
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        raise InvalidToken("malformed token")
    catalog = catalog or open_catalog()
    # One indexed read on a pooled connection (Core, no ORM session): a service authenticates
    # every request.
    with catalog.engine.connect() as connection:
        row = connection.execute(_BY_TOKEN, {"digest": hash_token(token)}).first()
    if row is None:
        raise InvalidToken("unknown token")
    user_id, name, role, revoked_at = row
    if revoked_at is not None:
        raise RevokedToken(f"the token of user {name!r} was revoked")
    return Principal(name=name, role=Role(role), user_id=user_id)


def resolve_token(token: str | None) -> str | None:
    """The caller's token: ``token`` if given, else ``RADGATE_TOKEN``, else the first line of
    the file named by ``RADGATE_TOKEN_FILE`` (a mounted secret); ``None`` when there is none."""
    if token:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = os.environ.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() or None
    except OSError as exc:
        raise InvalidToken(f"cannot read {TOKEN_FILE_ENV}: {exc.strerror}") from exc


def principal_from_env_or_token(token: str | None) -> Principal:
    """Authenticate ``token`` if given, else ``RADGATE_TOKEN``, else ``RADGATE_TOKEN_FILE``."""
    return authenticate(resolve_token(token))


def has_users(*, catalog: Catalog | None = None) -> bool:
    """Whether any user exists (before the first admin, only bootstrap commands run)."""
    catalog = catalog or open_catalog()
    with catalog.session() as session:
        return bool(session.scalar(select(func.count()).select_from(User)))


def add_user(
    name: str, role: Role | str, *, by: Principal | None, catalog: Catalog | None = None
) -> IssuedToken:
    """Create a user and return its token (shown once).

    ``by`` must be an admin, except for the very first user, which may be created with
    ``by=None`` and must itself be an admin (bootstrap).
    """
    from governance.audit import record

    name = _validate_name(name)
    role = Role.parse(role)
    catalog = catalog or open_catalog()
    token = _new_token()
    try:
        with catalog.session() as session:
            if by is None:
                if session.scalar(select(func.count()).select_from(User)):
                    raise BootstrapError("users exist already: an admin token is required")
                if role is not Role.ADMIN:
                    raise BootstrapError("the first user must be an admin")
                creator = name
            else:
                require_role(by, Role.ADMIN)
                creator = by.name
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise UserExists(f"user {name!r} exists already")
            row = User(name=name, role=role.value, token_sha256=hash_token(token), created_by=creator)
            if by is None:
                # The bootstrap admin takes the first row id: of concurrent bootstraps, which all
                # saw an empty table, exactly one insert succeeds; the others fail on the key.
                row.id = 1
            session.add(row)
            session.flush()
            if by is None and session.get_bind().dialect.name == "postgresql":
                # An explicit id leaves PostgreSQL's sequence at 1: the next user would take it.
                session.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), 1)"))
            info = _info(row)
    except IntegrityError as exc:
        if by is None:
            raise BootstrapError(
                "another bootstrap created the first admin: an admin token is required"
            ) from exc
        raise UserExists(f"user {name!r} exists already") from exc
    record(
        creator,
        "user.add",
        f"user:{name}",
        {"role": role.value, "bootstrap": by is None},
        role=(by.role if by else Role.ADMIN).value,
    )
    return IssuedToken(info, token)


def list_users(*, by: Principal, catalog: Catalog | None = None) -> list[UserInfo]:
    require_role(by, Role.ADMIN, Role.AUDITOR)
    catalog = catalog or open_catalog()
    with catalog.session() as session:
        return [_info(r) for r in session.scalars(select(User).order_by(User.id))]


def rotate_token(name: str, *, by: Principal, catalog: Catalog | None = None) -> IssuedToken:
    """Issue a new token for ``name`` (an admin, or the user themself); the old one stops working."""
    from governance.audit import record

    if by.name != name:
        require_role(by, Role.ADMIN)
    catalog = catalog or open_catalog()
    token = _new_token()
    with catalog.session() as session:
        row = session.scalar(select(User).where(User.name == name))
        if row is None:
            raise UnknownUser(f"no user {name!r}")
        if row.revoked_at is not None:
            raise RevokedToken(f"user {name!r} is revoked")
        row.token_sha256 = hash_token(token)
        info = _info(row)
    record(by.name, "user.rotate", f"user:{name}", {"role": info.role.value}, role=by.role.value)
    return IssuedToken(info, token)


def revoke_user(name: str, *, by: Principal, catalog: Catalog | None = None) -> UserInfo:
    """Revoke a user's token at once (its history stays; the name cannot be reused)."""
    from governance.audit import record

    require_role(by, Role.ADMIN)
    catalog = catalog or open_catalog()
    with catalog.session() as session:
        row = session.scalar(select(User).where(User.name == name))
        if row is None:
            raise UnknownUser(f"no user {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        info = _info(row)
    record(by.name, "user.revoke", f"user:{name}", {"role": info.role.value}, role=by.role.value)
    return info
