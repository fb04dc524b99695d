"""Which role each ``radgate`` command needs: one table, checked in one place.

:data:`COMMAND_ACCESS` maps a command path (``"dataset create"``) to its :class:`Access`.
:func:`governance.cli.guard.guard_typer_app` wraps every command of the ``radgate`` app so
that :func:`authorize_command` runs before the command does anything. A command that is not in
the table is refused (fail closed), and ``tests/unit/test_command_access.py`` fails until it is
added. Libraries keep their own finer checks (the approval policy's roles, self-rotation,
the admin co-signature of an erasure); this table is the coarse gate in front of them.

While a command runs, :func:`acting_principal` is the authenticated caller, so that audit
entries written deep inside (ingestion, training) name the real actor and role.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from governance.auth.roles import BootstrapError, PermissionDenied, Principal, Role, require_role
from governance.auth.users import authenticate, has_users, resolve_token

__all__ = [
    "COMMAND_ACCESS",
    "Access",
    "AccessMode",
    "UnlistedCommand",
    "access_for",
    "acting_as",
    "acting_principal",
    "authorize_command",
    "matrix_markdown",
]


class AccessMode(enum.StrEnum):
    """How a command authenticates its caller."""

    ROLES = "roles"  # a valid token whose role is one of ``roles``
    ANY_USER = "any-user"  # any valid token; the command checks more (policy roles, self-service)
    BOOTSTRAP = "bootstrap"  # as ROLES, but no token is needed while no user exists (first admin)
    SELF = "self"  # the command authenticates by itself (documented in ``note``)


@dataclass(frozen=True)
class Access:
    """What a command requires of its caller."""

    mode: AccessMode
    roles: frozenset[Role] = frozenset()
    note: str = ""

    def describe(self) -> str:
        if self.mode is AccessMode.ANY_USER:
            return "any user"
        if self.mode is AccessMode.SELF:
            return "see note"
        return ", ".join(sorted(r.value for r in self.roles))


class UnlistedCommand(PermissionDenied):
    """The command has no entry in :data:`COMMAND_ACCESS`: refused until one is added."""


def _roles(*roles: Role, note: str = "") -> Access:
    return Access(AccessMode.ROLES, frozenset(roles), note)


def _any(note: str) -> Access:
    return Access(AccessMode.ANY_USER, frozenset(), note)


A, DS, ML, CR, PACS, HB, AUD = (
    Role.ADMIN,
    Role.DATA_STEWARD,
    Role.ML_ENGINEER,
    Role.CLINICAL_REVIEWER,
    Role.PACS_CLIENT,
    Role.HONEST_BROKER,
    Role.AUDITOR,
)

#: Command path -> who may run it. Keep in the order of ``radgate --help``; the rendered matrix
#: is in ``governance/README.md`` (a test checks that the two agree).
COMMAND_ACCESS: Mapping[str, Access] = {
    # intake (imaging)
    "deid": _roles(DS, note="reads PHI, writes de-identified copies"),
    "ingest": _roles(DS),
    "catalog": _roles(DS, ML, AUD),
    "reid": _roles(HB, note="audited; refusals too"),
    "gateway": _roles(A, DS, note="starts the intake service; peers are checked per association/request"),
    "pull": _roles(DS),
    "push": _roles(DS, ML, note="sends results to a configured PACS"),
    "compliance check": _roles(AUD, A, DS),
    "compliance erasures": _roles(AUD, A, HB),
    "erase": _roles(HB, note="execution needs an admin's own confirmation (erase-confirm)"),
    "erase-confirm": _roles(A, note="the second approver of an erasure request, signed in as themself"),
    # datasets and training
    "demo-data": _roles(DS, ML, note="synthetic studies with fake PHI"),
    "dataset create": _roles(DS, ML),
    "dataset list": _roles(DS, ML, AUD),
    "dataset show": _roles(DS, ML, AUD),
    "dataset report": _roles(DS, ML, AUD),
    "train": _roles(ML),
    "retrain": _roles(ML),
    # explanations
    "explain": _roles(ML, CR),
    "explain-sanity": _roles(ML),
    "explain-segmentation": _roles(ML, CR),
    # governance
    "users add": Access(
        AccessMode.BOOTSTRAP, frozenset({A}), "no token while no user exists: the first user, an admin"
    ),
    "users list": _roles(A, AUD),
    "users rotate": _any("own token, or an admin for anyone"),
    "users revoke": _roles(A),
    "audit list": _roles(AUD, A),
    "audit verify": _roles(AUD, A),
    "audit export": _roles(AUD, A),
    "audit anchor": _roles(AUD, A),
    "audit forward": _roles(AUD, A),
    "model submit": _roles(ML),
    "model approve": _any("the roles the policy names (default clinical-reviewer, ml-engineer)"),
    "model reject": _any("the roles the policy names (default clinical-reviewer, ml-engineer)"),
    "model revoke": _any("clinical-reviewer, ml-engineer, admin, or a role the policy names"),
    "model promote": _roles(ML, A),
    "model status": _any("read-only"),
    "model list": _any("read-only"),
    "model gate": _any("read-only"),
    "model webhook serve": _roles(A, note="starts the receiver; MLflow requests are HMAC-signed"),
    "model webhook register": _roles(A),
    "policy check": _any("read-only"),
    "policy sign": _roles(A, note="records the policy's hash; the gate refuses any other policy"),
    # serving and monitoring
    "serve": _roles(A, ML, note="starts the service; clients authenticate per request"),
    "serve-ae": _roles(PACS, note="its token is the one it presents to the serving API"),
    "predict": _roles(ML, CR, note="an approved model over a dataset version; the gate decides per batch"),
    "triton export": _roles(ML, A),
    "triton publish": _roles(ML, A, note="the gate's publisher: records the files' hashes (audited)"),
    "triton start": _roles(ML, A),
    "monitor drift": _roles(ML, AUD),
    "monitor profile": _roles(ML),
    "monitor replay": _roles(ML),
    "feedback submit": _roles(CR),
    "feedback export": _roles(ML, DS, AUD),
    "feedback dataset": _roles(DS, ML),
    "ui": _roles(A, ML, note="starts the UI; users sign in with their own token"),
    # keys (serving: it re-seals serving's stores as well as intake's)
    "keys init": _roles(A, note="creates missing key files; mount each only where it is needed"),
    "keys rotate": _roles(A, note="re-seals every store each key seals; the pseudonym key is never rotated"),
    "keys migrate": _roles(A, note="from one project key to the separated keys"),
    "certs dev": Access(
        AccessMode.SELF,
        frozenset(),
        "writes a throw-away CA and certificates to a directory; reads no platform data",
    ),
    "demo": Access(
        AccessMode.SELF,
        frozenset(),
        "creates its demo users (admin bootstrap, or --token of an admin when users exist) and "
        "acts as them; their tokens are kept in RADGATE_HOME/demo/tokens.json (0600)",
    ),
}

_acting: ContextVar[Principal | None] = ContextVar("radgate_acting_principal", default=None)


def acting_principal() -> Principal | None:
    """The caller of the running command (set by the CLI guard or :func:`acting_as`)."""
    return _acting.get()


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[Principal | None]:
    """Within the block, audit entries of local work name ``principal``."""
    reset = _acting.set(principal)
    try:
        yield principal
    finally:
        _acting.reset(reset)


def access_for(command: str) -> Access:
    """The table entry of ``command`` (space-separated path); :class:`UnlistedCommand` if none."""
    try:
        return COMMAND_ACCESS[command]
    except KeyError:
        raise UnlistedCommand(
            f"command {command!r} has no entry in the access table (governance/auth/access.py)"
        ) from None


def authorize_command(command: str, token: str | None) -> Principal | None:
    """Authenticate the caller of ``command`` and check its role, before it does anything.

    ``token`` is ``--token``; otherwise ``RADGATE_TOKEN`` or ``RADGATE_TOKEN_FILE``. Returns the
    principal, or ``None`` for a bootstrap call (no user yet) or a self-authenticating command.
    Raises :class:`MissingToken`, :class:`InvalidToken`, :class:`RevokedToken` (not
    authenticated), :class:`PermissionDenied` or :class:`BootstrapError` (not allowed).
    """
    access = access_for(command)
    if access.mode is AccessMode.SELF:
        return None
    token = resolve_token(token)
    if access.mode is AccessMode.BOOTSTRAP and not token:
        if has_users():
            raise BootstrapError("users exist already: an admin token is required")
        return None
    principal = authenticate(token)
    if access.mode is not AccessMode.ANY_USER:
        require_role(principal, *access.roles)
    return principal


def matrix_markdown() -> str:
    """The table as Markdown rows (what ``governance/README.md`` shows)."""
    lines = ["| command | who may run it | note |", "|---|---|---|"]
    for command, access in COMMAND_ACCESS.items():
        who = {AccessMode.BOOTSTRAP: "admin (or nobody yet)", AccessMode.SELF: "anyone (see note)"}.get(
            access.mode, access.describe()
        )
        lines.append(f"| `radgate {command}` | {who} | {access.note} |")
    return "\n".join(lines)
