"""Reviewer web UI under ``/ui``: sign-in with a RadGate token (HttpOnly cookie), models and
versions with the policy checklist and the approval workflow (CSRF-protected POSTs calling the
same :class:`governance.approvals.Workflow` as the CLI), the audit trail with chain
verification, a case viewer (window/level, zoom/pan, attribution overlay) and drift reports.

Serving: ``install_ui(app)`` adds the router, its static files and error handlers to the
ingress app. Standalone: :func:`create_ui_app` (``radgate ui --port 8600``).
"""

from typing import TYPE_CHECKING

from governance.lazy import lazy_exports

if TYPE_CHECKING:
    from serving.ui.routes import PREFIX, create_ui_app, create_ui_router, install_ui

__all__ = ["PREFIX", "create_ui_app", "create_ui_router", "install_ui"]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
