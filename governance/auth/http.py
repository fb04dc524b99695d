"""FastAPI integration: a dependency that authenticates the Bearer token and checks roles.

Usage in a route::

    from governance.auth import fastapi_dependency, Role

    @app.post("/predict")
    def predict(principal: Principal = Depends(fastapi_dependency(Role.PACS_CLIENT, Role.ML_ENGINEER))):
        ...

Missing, unknown or revoked tokens answer 401 with ``WWW-Authenticate: Bearer``; a known
user without one of the roles answers 403. Failures never echo the token.

The dependency is a coroutine: with the catalog in SQLite (a local file) the token's row is read
on the event loop (one indexed read, tens of microseconds), with no hop to a worker thread and
back per request; a catalog over the network (PostgreSQL) is read on a worker thread, so that a
slow database never stalls the event loop. Either way the row is read for every request (no
cache): a revoked or rotated token is refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from governance.auth.roles import AuthenticationError, PermissionDenied, Principal, Role, require_role
from governance.auth.users import authenticate
from governance.catalog.db import open_catalog

__all__ = ["fastapi_dependency"]

_bearer = HTTPBearer(auto_error=False, description="RadGate token (rg_...)")


async def _authenticate(token: str | None) -> Principal:
    if not token:
        return authenticate(token)  # refused without a database read
    catalog = open_catalog()
    if catalog.engine.dialect.name == "sqlite":
        return authenticate(token, catalog=catalog)
    return await asyncio.to_thread(authenticate, token, catalog=catalog)


def fastapi_dependency(*roles: Role | str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency returning the caller's :class:`Principal`.

    With no roles, any authenticated user passes; otherwise the caller's role must be one of
    ``roles``.
    """
    wanted = tuple(Role.parse(r) for r in roles)

    async def dependency(
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        token = credentials.credentials if credentials is not None else None
        try:
            principal = await _authenticate(token)
            if wanted:
                require_role(principal, *wanted)
        except AuthenticationError as exc:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}
            ) from exc
        except PermissionDenied as exc:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc
        return principal

    dependency.__name__ = "radgate_auth_" + "_".join(r.value.replace("-", "_") for r in wanted)
    return dependency
