"""Every HTTP route of the serving API and of STOW-RS requires a RadGate token with a role
(``governance.auth.fastapi_dependency``), including routes added later; the matrix is in
governance/README.md ("Who may call each HTTP route"). The UI checks its cookie in each page
(tests/ui); the webhook receiver checks MLflow's signature (tests of the approvals package)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

# Routes a caller may reach without a token: none on these two services.
PUBLIC: set[str] = set()
# The reviewer UI, when serving mounts it, signs users in with a cookie and checks the role in
# each page (tests/ui); it is not a Bearer-token API.
UI_PREFIX = "/ui"


def _auth_names(dependant: Any) -> list[str]:
    found: list[str] = []
    for dependency in dependant.dependencies:
        found.append(getattr(dependency.call, "__name__", ""))
        found.extend(_auth_names(dependency))
    return [name for name in found if name.startswith("radgate_auth_")]


def _routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # an included router (FastAPI >= 0.160)
            found.extend(_routes(list(route.original_router.routes)))
        elif hasattr(route, "routes"):
            found.extend(_routes(list(route.routes)))
    return found


def _roles_by_route(app: FastAPI) -> dict[str, str]:
    table: dict[str, str] = {}
    for route in _routes(list(app.routes)):
        if route.path == UI_PREFIX or route.path.startswith(UI_PREFIX + "/"):
            continue
        for method in sorted(route.methods or ()):
            names = _auth_names(route.dependant)
            key = f"{method} {route.path}"
            assert names or key in PUBLIC, f"{key} does not authenticate its caller"
            table[key] = names[0].removeprefix("radgate_auth_") if names else "public"
    return table


def test_serving_api_routes_authenticate() -> None:
    from serving.api import api

    table = _roles_by_route(api)
    assert table["POST /v1/models/{name}/predict"] == "pacs_client_clinical_reviewer_ml_engineer"
    assert table["GET /metrics"] == "ml_engineer_admin_auditor"
    assert table["GET /healthz"] == table["GET /v1/models"] == ""  # any user
    assert table["POST /v1/feedback"] == "clinical_reviewer"


def test_stow_rs_routes_authenticate() -> None:
    from imaging.gateway.stow import create_stow_app

    table = _roles_by_route(create_stow_app(sink=None))  # type: ignore[arg-type]
    assert set(table.values()) == {"pacs_client"} and len(table) == 2
