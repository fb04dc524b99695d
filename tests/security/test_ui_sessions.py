"""UI sessions: the cookie held the raw API token and never expired. Now a random server-side
session id with idle and absolute timeouts, ended at sign-out, re-authentication for decisions,
audited sign-ins, failures and sign-outs, and a rate-limited sign-in."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from governance.audit import AuditLog
from governance.catalog import utcnow
from governance.settings import get_settings
from serving.ui.security import COOKIE
from tests.ui.conftest import case_dir, cast, mlflow_template, registry, ui_client
from tests.ui.test_ui_pages import NAME, sign_in, submitted

__all__ = ["case_dir", "cast", "mlflow_template", "registry", "ui_client"]


def _db() -> sqlite3.Connection:
    return sqlite3.connect(get_settings().home / "catalog.db", isolation_level=None)


def _age(column: str, by: timedelta) -> None:
    _db().execute(f"UPDATE ui_sessions SET {column} = ?", ((utcnow() - by).isoformat(sep=" "),))


def test_the_cookie_is_a_session_id_not_the_token_and_logout_ends_it(ui_client: Any, cast: Any) -> None:
    csrf = sign_in(ui_client, cast.tokens["doc"])
    cookie = ui_client.cookies[COOKIE]
    assert cookie != cast.tokens["doc"] and not cookie.startswith("rg_") and len(cookie) >= 40
    stored = _db().execute("SELECT id_mac FROM ui_sessions").fetchall()
    assert len(stored) == 1 and stored[0][0] != cookie  # only an HMAC of the id is kept
    assert ui_client.get("/ui/cases", follow_redirects=False).status_code == 200
    ui_client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    ui_client.cookies.set(COOKIE, cookie, path="/ui")  # replay the old cookie
    assert ui_client.get("/ui/cases", follow_redirects=False).status_code in (303, 401)
    actions = [e.action for e in AuditLog().entries(action="ui.")]
    assert "ui.login" in actions and "ui.logout" in actions


def test_idle_and_absolute_timeouts_end_sessions(ui_client: Any, cast: Any) -> None:
    sign_in(ui_client, cast.tokens["doc"])
    _age("last_seen", timedelta(minutes=16))
    assert ui_client.get("/ui/cases", follow_redirects=False).status_code in (303, 401)
    assert _db().execute("SELECT count(*) FROM ui_sessions").fetchone()[0] == 0
    sign_in(ui_client, cast.tokens["doc"])
    _age("created_at", timedelta(hours=9))  # active all along, but past the absolute limit
    assert ui_client.get("/ui/cases", follow_redirects=False).status_code in (303, 401)


def test_decisions_need_the_token_again_after_a_while(ui_client: Any, registry: Any, cast: Any) -> None:
    version = submitted(registry, cast)
    csrf = sign_in(ui_client, cast.tokens["doc"])
    _age("authenticated_at", timedelta(minutes=10))
    url = f"/ui/models/{NAME}/{version}/approve"
    refused = ui_client.post(url, data={"csrf": csrf, "comment": "ok"}, follow_redirects=False)
    assert "error=" in refused.headers["location"]
    wrong = ui_client.post(
        url, data={"csrf": csrf, "comment": "ok", "token": cast.tokens["doc2"]}, follow_redirects=False
    )
    assert "error=" in wrong.headers["location"]  # another user's token does not confirm
    assert not AuditLog().entries(action="model.approve")
    done = ui_client.post(
        url, data={"csrf": csrf, "comment": "ok", "token": cast.tokens["doc"]}, follow_redirects=False
    )
    assert "done=approve" in done.headers["location"]


def test_failed_sign_ins_are_audited_and_rate_limited(ui_client: Any, cast: Any) -> None:
    codes = [
        ui_client.post("/ui/login", data={"token": "rg_" + "x" * 43}, follow_redirects=False).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    # even the right token waits out the window from this address
    assert (
        ui_client.post("/ui/login", data={"token": cast.tokens["doc"]}, follow_redirects=False).status_code
        == 429
    )
    assert len(AuditLog().entries(action="ui.login.failed")) == 5
