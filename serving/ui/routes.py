"""The ``/ui`` router: sign-in, models and versions with the approval workflow, audit trail,
case viewer and drift reports (server-rendered Jinja2, static JS/CSS, no CDN)."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# No `from __future__ import annotations`: Ray Serve pickles the ingress app by value, and the
# route closures below must carry their annotations as objects, not names it cannot resolve.
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from governance.auth import AuthenticationError, AuthError, Role, authenticate
from governance.settings import get_settings
from serving.ui.cases import CaseError, list_cases, load_case
from serving.ui.pages import PREFIX, UI_DIR, nav, render_page, signed_in
from serving.ui.security import (
    AUDIT_ROLES,
    CASE_ROLES,
    COOKIE,
    DRIFT_ROLES,
    MODEL_ROLES,
    CsrfError,
    NotSignedIn,
    audit_read,
    chain_report,
    current_principal,
    verify_csrf,
)
from serving.ui.served_routes import FeedbackFields, add_prediction_routes, feedback_response
from serving.ui.sessions import (
    LoginThrottle,
    end_session,
    reauthenticate,
    recently_authenticated,
    start_session,
)

__all__ = ["PREFIX", "create_ui_app", "create_ui_router", "install_ui"]

_ACTIONS = ("submit", "approve", "reject", "revoke", "promote")
_DECISIONS = frozenset({"approve", "reject", "revoke", "promote"})
_AUDIT_PAGE = 200


def _workflow() -> Any:
    from governance.approvals import Workflow

    return Workflow()


def create_ui_router(*, secure_cookie: bool = False) -> APIRouter:
    """The UI routes under ``/ui``. Mount the static files with :func:`install_ui` (an
    ``APIRouter`` cannot carry a mount); the pages work without them, the viewer does not."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    throttle = LoginThrottle()

    @router.get("", response_class=HTMLResponse)
    @router.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        try:
            principal = current_principal(request)
        except NotSignedIn:
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        items = nav(principal)
        if not items:
            return render_page(
                request, "error.html", principal, status_code=403, message="Your role has no pages here."
            )
        return RedirectResponse(items[0][1], status_code=303)

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return render_page(request, "login.html", None, error="")

    @router.post("/login")
    def login(request: Request, token: str = Form(..., max_length=256)) -> Response:
        from governance.audit import record

        client = request.client.host if request.client else "unknown"
        if throttle.blocked(client):
            return render_page(
                request,
                "login.html",
                None,
                status_code=429,
                error="Too many failed sign-ins; try again later.",
            )
        try:
            principal = authenticate(token.strip())
        except AuthenticationError as exc:
            throttle.failed(client)
            record("anonymous", "ui.login.failed", "ui:login", {"reason": type(exc).__name__})
            return render_page(request, "login.html", None, status_code=401, error="That token is not valid.")
        throttle.succeeded(client)
        session_id = start_session(principal)
        record(principal.name, "ui.login", "ui:session", role=principal.role.value)
        items = nav(principal)
        response = RedirectResponse(items[0][1] if items else f"{PREFIX}/", status_code=303)
        response.set_cookie(
            COOKIE, session_id, httponly=True, samesite="strict", secure=secure_cookie, path=PREFIX
        )
        return response

    @router.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        from governance.audit import record

        verify_csrf(request, csrf)
        try:
            principal = current_principal(request)
            record(principal.name, "ui.logout", "ui:session", role=principal.role.value)
        except NotSignedIn:
            pass
        end_session(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # ---- models ------------------------------------------------------------------------

    @router.get("/models", response_class=HTMLResponse)
    def models(request: Request) -> HTMLResponse:
        from serving.ui.models import list_versions

        principal = signed_in(request, *MODEL_ROLES)
        return render_page(request, "models.html", principal, models=list_versions(_workflow()))

    @router.get("/models/{name}/{version}", response_class=HTMLResponse)
    def version_page(request: Request, name: str, version: str, done: str = "", error: str = "") -> Response:
        from governance.approvals import RegistryError
        from serving.ui.models import allowed_actions, version_view

        principal = signed_in(request, *MODEL_ROLES)
        workflow = _workflow()
        try:
            view = version_view(workflow, name, version)
        except RegistryError:
            return render_page(
                request, "error.html", principal, status_code=404, message="No such model version."
            )
        return render_page(
            request,
            "version.html",
            principal,
            v=view,
            actions=allowed_actions(workflow, principal, name),
            done=done if done in _ACTIONS else "",
            error=error[:300],
        )

    @router.get("/models/{name}/{version}/files/{path:path}")
    def version_file(request: Request, name: str, version: str, path: str) -> Response:
        from governance.approvals import RegistryError
        from governance.approvals.registry import get_version
        from serving.ui.evidence import read_artifact, run_evidence

        signed_in(request, *MODEL_ROLES)
        client = _workflow().client
        try:
            mv = get_version(client, name, version)
        except RegistryError:
            return JSONResponse({"detail": "not found"}, status_code=404)
        if not mv.run_id or path not in run_evidence(client, mv.run_id).files:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return Response(read_artifact(client, mv.run_id, path), media_type="image/png")

    @router.post("/models/{name}/{version}/{action}")
    def act(
        request: Request,
        name: str,
        version: str,
        action: str,
        csrf: str = Form(""),
        comment: str = Form(""),
        alias: str = Form(""),
        token: str = Form("", max_length=256),
    ) -> Response:
        from governance.approvals import ApprovalError, PolicyNotSatisfied, RegistryError

        verify_csrf(request, csrf)
        principal = signed_in(request, *MODEL_ROLES)
        if action not in _ACTIONS:
            return JSONResponse({"detail": "unknown action"}, status_code=404)
        session_id = request.cookies.get(COOKIE)
        # A decision from a session signed in long ago needs the user's token again.
        stale = action in _DECISIONS and not recently_authenticated(session_id)
        if stale and not reauthenticate(session_id, token):
            return _redirect_version(name, version, error="Enter your token again to confirm this decision.")
        if action != "promote" and action != "submit" and not comment.strip():
            return _redirect_version(name, version, error="A comment is required.")
        workflow = _workflow()
        try:
            if action == "promote":
                workflow.promote(principal, name, version, alias)
            else:
                getattr(workflow, action)(principal, name, version, comment)
        except PolicyNotSatisfied as exc:
            failed = ", ".join(item.name for item in exc.checklist.failures)
            return _redirect_version(name, version, error=f"Policy not satisfied: {failed}")
        except (ApprovalError, RegistryError) as exc:
            return _redirect_version(name, version, error=str(exc))
        return _redirect_version(name, version, done=action)

    # ---- audit -------------------------------------------------------------------------

    @router.get("/audit", response_class=HTMLResponse)
    def audit(
        request: Request,
        actor: str = "",
        action: str = "",
        target: str = "",
        since: str = "",
        until: str = "",
    ) -> HTMLResponse:
        from governance.audit import AuditLog
        from governance.audit.log import AuditError

        principal = signed_in(request, *AUDIT_ROLES)
        log = AuditLog()
        filters = {"actor": actor, "action": action, "target": target, "since": since, "until": until}
        error = ""
        try:
            entries = log.entries(
                actor=actor or None,
                action=action or None,
                target_prefix=target or None,
                since=since or None,
                until=until or None,
                limit=_AUDIT_PAGE,
                newest_first=True,
            )
        except (AuditError, ValueError):
            entries, error = [], "Dates must be ISO dates or times (UTC), e.g. 2026-01-31."
        report = chain_report()
        return render_page(
            request, "audit.html", principal, entries=entries, filters=filters, report=report, error=error
        )

    # ---- cases -------------------------------------------------------------------------

    @router.get("/cases", response_class=HTMLResponse)
    def cases(request: Request, model: str = "", page: int = 1) -> HTMLResponse:
        from serving.ui.predictions import recent_predictions

        principal = signed_in(request, *CASE_ROLES)
        served = recent_predictions(model or None, page)
        return render_page(request, "cases.html", principal, cases=list_cases(), served=served)

    @router.get("/cases/{case_id}", response_class=HTMLResponse)
    def case_page(request: Request, case_id: str) -> HTMLResponse:
        principal = signed_in(request, *CASE_ROLES)
        try:
            case = load_case(case_id)
        except CaseError:
            return render_page(request, "error.html", principal, status_code=404, message="No such case.")
        audit_read(principal, "case", f"case:{case_id}")
        return render_page(request, "case.html", principal, case=case)

    @router.get("/api/cases/{case_id}/{method}")
    def case_data(request: Request, case_id: str, method: str) -> JSONResponse:
        principal = signed_in(request, *CASE_ROLES)
        try:
            payload = load_case(case_id).payload(method)
        except CaseError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        audit_read(principal, "overlay", f"case:{case_id}/{method[:32]}")
        return JSONResponse(payload, headers={"Cache-Control": "no-store"})

    @router.post("/api/cases/{case_id}/feedback")
    def case_feedback(request: Request, case_id: str, form: FeedbackFields) -> JSONResponse:
        verify_csrf(request, form.csrf)
        principal = signed_in(request, Role.CLINICAL_REVIEWER)
        try:
            case = load_case(case_id)
        except CaseError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if not case.request_id:
            return JSONResponse(
                {"detail": "feedback applies to served predictions; this case has no request id"},
                status_code=409,
            )
        return feedback_response(principal, case.request_id, form)

    add_prediction_routes(router)

    # ---- drift -------------------------------------------------------------------------

    @router.get("/drift", response_class=HTMLResponse)
    def drift(request: Request) -> HTMLResponse:
        principal = signed_in(request, *DRIFT_ROLES)
        return render_page(request, "drift.html", principal, reports=_drift_reports())

    @router.get("/drift/{model}/{stamp}/{filename}")
    def drift_file(request: Request, model: str, stamp: str, filename: str) -> Response:
        signed_in(request, *DRIFT_ROLES)
        root = (get_settings().home / "monitoring" / "reports").resolve()
        path = (root / model / stamp / filename).resolve()
        if root not in path.parents or path.suffix not in {".png", ".html", ".json"} or not path.is_file():
            return JSONResponse({"detail": "not found"}, status_code=404)
        headers = {"Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"}
        return FileResponse(path, headers=headers)

    return router


def _redirect_version(name: str, version: str, *, done: str = "", error: str = "") -> RedirectResponse:
    from urllib.parse import quote, urlencode

    query = urlencode({k: v for k, v in {"done": done, "error": error}.items() if v})
    url = f"{PREFIX}/models/{quote(name, safe='')}/{quote(version, safe='')}"
    return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)


def _drift_reports() -> list[dict[str, Any]]:
    root = get_settings().home / "monitoring" / "reports"
    reports: list[dict[str, Any]] = []
    if not root.is_dir():
        return reports
    for path in sorted(root.glob("*/*/drift.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        model, stamp = path.parent.parent.name, path.parent.name
        plots = data.get("plots") or {}
        names = plots.values() if isinstance(plots, dict) else plots
        reports.append(
            {
                "model": model,
                "stamp": stamp,
                "drifted": data.get("drifted", data.get("drift")),
                "summary": {k: data[k] for k in ("model_version", "n_live", "n_reference") if k in data},
                "plots": [Path(str(p)).name for p in names if str(p).endswith(".png")],
            }
        )
    return reports


def _errors(app: FastAPI) -> None:
    def not_signed_in(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith(f"{PREFIX}/api/"):
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        return RedirectResponse(f"{PREFIX}/login", status_code=303)

    def forbidden(request: Request, exc: Exception) -> Response:
        if isinstance(exc, AuthenticationError):
            return not_signed_in(request, exc)
        if request.url.path.startswith(f"{PREFIX}/api/") or request.method != "GET":
            return JSONResponse({"detail": "your role may not do this"}, status_code=403)
        try:
            principal = current_principal(request)
        except NotSignedIn:
            return not_signed_in(request, exc)
        return render_page(
            request, "error.html", principal, status_code=403, message="Your role may not see this page."
        )

    def csrf(request: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": "CSRF check failed"}, status_code=403)

    handlers: dict[type[Exception], Callable[[Request, Exception], Response]] = {
        NotSignedIn: not_signed_in,
        AuthError: forbidden,
        CsrfError: csrf,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)


_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def install_ui(app: FastAPI, *, secure_cookie: bool = False) -> None:
    """Add the UI router, its static files, error handlers and security headers (on ``/ui``
    responses only) to an existing FastAPI app."""
    app.include_router(create_ui_router(secure_cookie=secure_cookie))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(UI_DIR / "static")), name="ui-static")
    _errors(app)
    app.add_middleware(_UiHeaders)


class _UiHeaders:
    """Security headers on ``/ui`` responses; other requests (the serving API's predictions, their
    streamed bodies) pass straight through (plain ASGI, no per-request wrapping)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(f"{PREFIX}/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in _SECURITY_HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_ui_app(*, secure_cookie: bool = False) -> FastAPI:
    """A standalone app serving only the UI (no Ray needed)."""
    app = FastAPI(title="RadGate reviewer UI", docs_url=None, redoc_url=None, openapi_url=None)
    install_ui(app, secure_cookie=secure_cookie)

    @app.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=303)

    return app
