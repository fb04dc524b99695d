"""Server-side sessions of the reviewer UI.

The cookie holds a random session id (256 bits), never the user's token. The catalog keeps
only an HMAC of the id under the UI's own key (``keys/ui-session.key``): a database reader
cannot replay a session, and rotating the key ends every session. A session ends after
``RADGATE_UI_IDLE_S`` without a request (default 15 minutes) or ``RADGATE_UI_ABSOLUTE_S``
after sign-in (default 8 hours), at sign-out, or when the user is revoked. Decisions
(approve, reject, revoke, promote) need the token entered again when the last authentication
is older than ``RADGATE_UI_REAUTH_S`` (default 5 minutes).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import DateTime, Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from governance.auth import Principal, Role, authenticate
from governance.catalog import Base, open_catalog, utcnow

__all__ = [
    "LoginThrottle",
    "SessionExpired",
    "UiSession",
    "end_all_sessions",
    "end_session",
    "reauthenticate",
    "recently_authenticated",
    "session_principal",
    "start_session",
]

_TOUCH_EVERY = timedelta(seconds=30)  # last_seen is written at most this often per session


class SessionExpired(Exception):
    """No such session, or it timed out, or its user was revoked."""


class UiSession(Base):
    __tablename__ = "ui_sessions"

    id_mac: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    authenticated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _seconds(name: str, default: float) -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get(name, default)))
    except ValueError:
        return timedelta(seconds=default)


def idle_timeout() -> timedelta:
    return _seconds("RADGATE_UI_IDLE_S", 15 * 60)


def absolute_timeout() -> timedelta:
    return _seconds("RADGATE_UI_ABSOLUTE_S", 8 * 3600)


def reauth_window() -> timedelta:
    return _seconds("RADGATE_UI_REAUTH_S", 5 * 60)


def _mac(session_id: str) -> str:
    from governance.keyring import UI_SESSION, load_store_key

    return load_store_key(UI_SESSION).mac(b"ui-session\0" + session_id.encode()).hex()


def _aware(moment: datetime) -> datetime:
    from datetime import UTC

    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def start_session(principal: Principal) -> str:
    """A new session for ``principal`` (just authenticated); returns the id for the cookie."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    with open_catalog().session() as session:
        session.add(
            UiSession(
                id_mac=_mac(session_id),
                user_id=principal.user_id,
                created_at=now,
                last_seen=now,
                authenticated_at=now,
            )
        )
    return session_id


def session_principal(session_id: str | None) -> Principal:
    """The signed-in user of a live session; ends and refuses an expired one."""
    from governance.auth.users import User

    if not session_id or len(session_id) > 128:
        raise SessionExpired("not signed in")
    key, now = _mac(session_id), utcnow()
    with open_catalog().session() as session:
        row = session.get(UiSession, key)
        if row is None:
            raise SessionExpired("not signed in")
        user = session.get(User, row.user_id)
        expired = (
            now - _aware(row.last_seen) > idle_timeout()
            or now - _aware(row.created_at) > absolute_timeout()
            or user is None
            or user.revoked_at is not None
        )
        if expired or user is None:
            session.delete(row)  # committed as the block ends (raising inside would roll back)
            principal = None
        else:
            if now - _aware(row.last_seen) > _TOUCH_EVERY:
                row.last_seen = now
            principal = Principal(name=user.name, role=Role(user.role), user_id=user.id)
    if principal is None:
        raise SessionExpired("the session has ended; sign in again")
    return principal


def recently_authenticated(session_id: str | None) -> bool:
    if not session_id:
        return False
    with open_catalog().session() as session:
        row = session.get(UiSession, _mac(session_id))
        return row is not None and utcnow() - _aware(row.authenticated_at) <= reauth_window()


def reauthenticate(session_id: str | None, token: str) -> bool:
    """Whether ``token`` is the session user's own token (then the session is fresh again)."""
    from governance.auth import AuthenticationError

    if not session_id or not token:
        return False
    try:
        principal = authenticate(token.strip())
    except AuthenticationError:
        return False
    with open_catalog().session() as session:
        row = session.get(UiSession, _mac(session_id))
        if row is None or row.user_id != principal.user_id:
            return False
        row.authenticated_at = utcnow()
    return True


def end_session(session_id: str | None) -> None:
    if session_id:
        with open_catalog().session() as session:
            session.execute(delete(UiSession).where(UiSession.id_mac == _mac(session_id)))


def end_all_sessions() -> int:
    """End every UI session (the UI key was rotated); returns how many ended."""
    with open_catalog().session() as session:
        count = len(list(session.scalars(select(UiSession.id_mac))))
        session.execute(delete(UiSession))
    return count


class LoginThrottle:
    """Failed sign-ins per client address: more than ``limit`` in ``window_s`` -> refused (429)
    until the window passes. One per process (per UI replica)."""

    def __init__(self, limit: int = 5, window_s: float = 300.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s]
            self._failures[client] = recent
            if len(self._failures) > 10_000:  # bounded: forget the oldest addresses
                for stale in list(self._failures)[:5_000]:
                    del self._failures[stale]
            return len(recent) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
