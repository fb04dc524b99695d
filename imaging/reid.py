"""Re-identification: the honest broker reads originals back from the sealed map, audited."""

from __future__ import annotations

from sqlalchemy import select

from governance.audit import record
from governance.auth import AuthError, Role, principal_from_env_or_token, require_role
from governance.catalog import Pseudonym, open_catalog
from governance.keys import KeyError_, load_project_key

__all__ = ["ReidError", "reidentify"]


class ReidError(Exception):
    """Re-identification refused or impossible (message carries no PHI)."""


def reidentify(pseudonym: str, *, kind: str | None, reason: str, token: str | None) -> list[tuple[str, str]]:
    """Originals recorded for ``pseudonym``; requires the honest-broker role; audited either way."""
    try:
        principal = principal_from_env_or_token(token)
    except AuthError as exc:
        raise ReidError(str(exc)) from exc
    try:
        require_role(principal, Role.HONEST_BROKER)
    except AuthError as exc:
        record(
            principal.name,
            "reid.denied",
            f"pseudonym:{pseudonym}",
            {"kind": kind or "any"},
            role=principal.role.value,
        )
        raise ReidError(str(exc)) from exc
    if not reason.strip():
        raise ReidError("a reason is required")
    key = load_project_key(create=False)
    with open_catalog().session() as session:
        query = select(Pseudonym).where(Pseudonym.pseudonym == pseudonym.strip())
        if kind:
            query = query.where(Pseudonym.kind == kind)
        rows = list(session.scalars(query))
    found: list[tuple[str, str]] = []
    for row in rows:
        if row.key_id != key.key_id:
            raise ReidError("the map was sealed under another project key")
        try:
            found.append(
                (row.kind, key.unseal(row.sealed_original, row.lookup.encode()).decode("utf-8", "replace"))
            )
        except KeyError_ as exc:
            raise ReidError(str(exc)) from exc
    # The audit names the pseudonym and the count, never the originals.
    record(
        principal.name,
        "reid",
        f"pseudonym:{pseudonym}",
        {"kind": kind or "any", "reason": reason[:500], "originals": len(found)},
        role=principal.role.value,
    )
    return sorted(set(found))
