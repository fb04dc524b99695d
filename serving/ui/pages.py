"""What every ``/ui`` page shares: the prefix, the Jinja2 templates and their filters, the
navigation for a role, rendering a page, and the signed-in check."""

import re
from pathlib import Path
from typing import Any

# No `from __future__ import annotations`, as in routes.py: Ray Serve pickles the ingress app.
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from governance.auth import Principal, Role, require_role
from serving.ui.security import (
    AUDIT_ROLES,
    CASE_ROLES,
    COOKIE,
    DRIFT_ROLES,
    MODEL_ROLES,
    csrf_token,
    current_principal,
)

__all__ = ["PREFIX", "UI_DIR", "nav", "render_page", "signed_in", "templates"]

PREFIX = "/ui"
UI_DIR = Path(__file__).parent
templates = Jinja2Templates(directory=str(UI_DIR / "templates"))
_HEX = re.compile(r"^[0-9a-f]{40,}$")


def _shown(value: Any) -> str:
    """A checklist value for people: lists joined, long digests shortened (full value in title)."""
    if value is None or value == []:
        return "—"
    if isinstance(value, list | tuple | set):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text[:12] + "…" if _HEX.match(text) else text


templates.env.filters["shown"] = _shown


def nav(principal: Principal) -> list[tuple[str, str]]:
    items = []
    if principal.role in MODEL_ROLES:
        items.append(("Models", f"{PREFIX}/models"))
    if principal.role in CASE_ROLES:
        items.append(("Cases", f"{PREFIX}/cases"))
    if principal.role in AUDIT_ROLES:
        items.append(("Audit", f"{PREFIX}/audit"))
    if principal.role in DRIFT_ROLES:
        items.append(("Drift", f"{PREFIX}/drift"))
    return items


def render_page(
    request: Request, template: str, principal: Principal | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    token = request.cookies.get(COOKIE)
    base = {
        "prefix": PREFIX,
        "principal": principal,
        "nav": nav(principal) if principal else [],
        "csrf": csrf_token(token) if (principal and token) else "",
    }
    response = templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def signed_in(request: Request, *roles: Role) -> Principal:
    principal = current_principal(request)
    if roles:
        require_role(principal, *roles)
    return principal
