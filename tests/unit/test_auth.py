"""Identities, roles and tokens: hash-only storage, bootstrap, role boundaries, FastAPI."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from governance.auth import (
    TOKEN_ENV,
    BootstrapError,
    InvalidToken,
    MissingToken,
    PermissionDenied,
    Principal,
    RevokedToken,
    Role,
    UserExists,
    add_user,
    authenticate,
    list_users,
    principal_from_env_or_token,
    require_role,
    revoke_user,
)
from governance.settings import get_settings
from governance.testing import create_cast


def test_first_user_bootstraps_as_admin_and_token_is_stored_only_as_hash() -> None:
    issued = add_user("root", Role.ADMIN, by=None)
    assert issued.token.startswith("rg_") and len(issued.token) >= 40
    assert "rg_" not in repr(issued)
    principal = authenticate(issued.token)
    assert principal == Principal("root", Role.ADMIN, principal.user_id)
    db = sqlite3.connect(get_settings().home / "catalog.db")
    rows = db.execute("SELECT name, token_sha256 FROM users").fetchall()
    assert rows == [("root", hashlib.sha256(issued.token.encode()).hexdigest())]
    dump = "\n".join(db.iterdump())
    assert issued.token not in dump


def test_bootstrap_only_once_and_only_as_admin() -> None:
    with pytest.raises(BootstrapError):
        add_user("eng", Role.ML_ENGINEER, by=None)
    add_user("root", Role.ADMIN, by=None)
    with pytest.raises(BootstrapError):
        add_user("root2", Role.ADMIN, by=None)


def test_only_admin_adds_and_revokes_users() -> None:
    cast = create_cast()
    for name in ("eng", "doc", "steward", "pacs", "broker", "auditor"):
        with pytest.raises(PermissionDenied):
            add_user(f"new-{name}", Role.AUDITOR, by=cast[name])
        with pytest.raises(PermissionDenied):
            revoke_user("eng2", by=cast[name])
    add_user("new", Role.PACS_CLIENT, by=cast["admin"])
    with pytest.raises(UserExists):
        add_user("new", Role.PACS_CLIENT, by=cast["admin"])


def test_list_users_admin_and_auditor_only() -> None:
    cast = create_cast()
    assert {u.name for u in list_users(by=cast["auditor"])} >= {"admin", "eng", "doc"}
    assert list_users(by=cast["admin"])
    with pytest.raises(PermissionDenied):
        list_users(by=cast["eng"])


def test_revoked_token_is_refused_at_once() -> None:
    cast = create_cast()
    assert authenticate(cast.tokens["pacs"]).name == "pacs"
    revoke_user("pacs", by=cast["admin"])
    with pytest.raises(RevokedToken):
        authenticate(cast.tokens["pacs"])
    assert not next(u for u in list_users(by=cast["admin"]) if u.name == "pacs").active


@pytest.mark.parametrize("token", [None, "", "abc", "rg_" + "x" * 43, "rg_" + "y" * 200])
def test_missing_or_bad_tokens(token: str | None) -> None:
    add_user("root", Role.ADMIN, by=None)
    with pytest.raises((MissingToken, InvalidToken)):
        authenticate(token)


def test_principal_from_env_or_token(monkeypatch: pytest.MonkeyPatch) -> None:
    cast = create_cast()
    monkeypatch.setenv(TOKEN_ENV, cast.tokens["broker"])
    assert principal_from_env_or_token(None).role is Role.HONEST_BROKER
    assert principal_from_env_or_token(cast.tokens["auditor"]).role is Role.AUDITOR  # explicit wins
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(MissingToken):
        principal_from_env_or_token(None)


@pytest.mark.parametrize("role", list(Role))
def test_require_role_both_ways(role: Role) -> None:
    principal = Principal("someone", role, 1)
    assert require_role(principal, role) is principal
    others = [r for r in Role if r is not role]
    with pytest.raises(PermissionDenied):
        require_role(principal, *others)


def test_admin_is_not_a_superuser() -> None:
    admin = Principal("root", Role.ADMIN, 1)
    for role in (Role.HONEST_BROKER, Role.CLINICAL_REVIEWER, Role.ML_ENGINEER):
        with pytest.raises(PermissionDenied):
            require_role(admin, role)


def test_user_management_is_audited_without_tokens() -> None:
    from governance.audit import AuditLog

    cast = create_cast()
    revoke_user("eng2", by=cast["admin"])
    entries = AuditLog().entries(action="user.")
    assert [e.action for e in entries].count("user.add") == 9
    assert entries[-1].action == "user.revoke" and entries[-1].actor == "admin"
    text = "".join(e.to_json() for e in entries)
    assert not any(token in text for token in cast.tokens.values())


def test_fastapi_dependency_401_403_200() -> None:
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from governance.auth import fastapi_dependency

    cast = create_cast()
    app = FastAPI()

    @app.get("/predict")
    def predict(who: Principal = Depends(fastapi_dependency(Role.PACS_CLIENT))) -> dict[str, str]:
        return {"caller": who.name}

    @app.get("/me")
    def me(who: Principal = Depends(fastapi_dependency())) -> dict[str, str]:
        return {"role": who.role.value}

    client = TestClient(app)
    missing = client.get("/predict")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get("/predict", headers={"Authorization": "Bearer rg_nope"}).status_code == 401
    auth = {"Authorization": f"Bearer {cast.tokens['pacs']}"}
    assert client.get("/predict", headers=auth).json() == {"caller": "pacs"}
    denied = client.get("/predict", headers={"Authorization": f"Bearer {cast.tokens['eng']}"})
    assert denied.status_code == 403 and cast.tokens["eng"] not in denied.text
    assert client.get("/me", headers={"Authorization": f"Bearer {cast.tokens['auditor']}"}).json() == {
        "role": "auditor"
    }
    revoke_user("pacs", by=cast["admin"])
    assert client.get("/predict", headers=auth).status_code == 401


def test_token_rotation_by_self_or_admin_only() -> None:
    from governance.auth import rotate_token

    cast = create_cast()
    fresh = rotate_token("doc", by=cast["doc"]).token
    with pytest.raises(InvalidToken):
        authenticate(cast.tokens["doc"])
    assert authenticate(fresh).name == "doc"
    with pytest.raises(PermissionDenied):
        rotate_token("doc", by=cast["eng"])
    assert authenticate(rotate_token("doc", by=cast["admin"]).token).name == "doc"
    revoke_user("eng2", by=cast["admin"])
    with pytest.raises(RevokedToken):
        rotate_token("eng2", by=cast["admin"])


def test_fastapi_dependency_runs_on_the_event_loop_and_reads_revocations_at_once() -> None:
    """The dependency is a coroutine (no worker-thread hop per request) and keeps no cache: a
    token revoked by another process (the row changed in the database) is refused at the next
    request."""
    import asyncio
    import sqlite3

    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from governance.auth import fastapi_dependency
    from governance.settings import get_settings

    dependency = fastapi_dependency(Role.PACS_CLIENT)
    assert asyncio.iscoroutinefunction(dependency)
    cast = create_cast()
    app = FastAPI()

    @app.get("/predict")
    async def predict(who: Principal = Depends(dependency)) -> dict[str, str]:
        return {"caller": who.name}

    client = TestClient(app)
    pacs = {"Authorization": f"Bearer {cast.tokens['pacs']}"}
    for _ in range(3):
        assert client.get("/predict", headers=pacs).json() == {"caller": "pacs"}
    other = sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)
    other.execute("UPDATE users SET revoked_at = CURRENT_TIMESTAMP WHERE name = 'pacs'")
    other.close()
    refused = client.get("/predict", headers=pacs)
    assert refused.status_code == 401 and cast.tokens["pacs"] not in refused.text
