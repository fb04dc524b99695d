"""UI routes of served predictions: one request's page (decision, clinician summary, the kept
explanation overlay, the feedback form), its overlay PNG, and feedback posted through the same
:func:`serving.monitoring.feedback.submit_feedback` as ``POST /v1/feedback``."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from governance.auth import Principal, Role
from governance.settings import get_settings
from serving.ui.pages import render_page, signed_in
from serving.ui.predictions import UnknownPrediction, load_prediction
from serving.ui.security import CASE_ROLES, audit_read, verify_csrf

__all__ = ["FeedbackForm", "add_prediction_routes", "feedback_response"]


class FeedbackForm(BaseModel):
    """The viewer's feedback form (``agree``: the button pressed, ``"true"`` or ``"false"``)."""

    csrf: str = ""
    agree: str
    corrected_label: str = ""
    comment: str = ""


#: A route parameter: the form fields of :class:`FeedbackForm`.
FeedbackFields = Annotated[FeedbackForm, Form()]


def feedback_response(principal: Principal, request_id: str, form: FeedbackForm) -> JSONResponse:
    """Submit a reviewer's feedback on a served request; 201, or 404/422/503 with a reason."""
    try:
        from serving.monitoring import MonitoringError
        from serving.monitoring.feedback import FeedbackIn, UnknownRequest, submit_feedback
    except ImportError:
        return JSONResponse({"detail": "the feedback store is not available"}, status_code=503)
    try:
        body = FeedbackIn(
            request_id=request_id,
            agree=form.agree == "true",
            corrected_label=form.corrected_label or None,
            comment=form.comment or None,
        )
        out = submit_feedback(principal, body)
    except UnknownRequest as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    except (ValueError, LookupError, MonitoringError) as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return JSONResponse({"feedback_id": out.feedback_id, "label": out.label}, status_code=201)


def add_prediction_routes(router: APIRouter) -> None:
    """``/predictions/{id}``, ``/api/predictions/{id}/overlay.png`` and ``.../feedback``."""

    @router.get("/predictions/{request_id}", response_class=HTMLResponse)
    def prediction_page(request: Request, request_id: str) -> HTMLResponse:
        principal = signed_in(request, *CASE_ROLES)
        try:
            prediction = load_prediction(request_id)
        except UnknownPrediction:
            return render_page(
                request, "error.html", principal, status_code=404, message="No such prediction."
            )
        audit_read(principal, "result", f"prediction:{request_id}")
        viewer = prediction.viewer_link(get_settings().viewer_url)
        return render_page(request, "prediction.html", principal, p=prediction, viewer=viewer)

    @router.get("/api/predictions/{request_id}/overlay.png")
    def prediction_overlay(request: Request, request_id: str) -> Response:
        principal = signed_in(request, *CASE_ROLES)
        try:
            png = load_prediction(request_id).overlay_png
        except UnknownPrediction:
            png = None
        if png is None:
            return JSONResponse({"detail": "no overlay kept for this prediction"}, status_code=404)
        audit_read(principal, "overlay", f"prediction:{request_id}")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.post("/api/predictions/{request_id}/feedback")
    def prediction_feedback(request: Request, request_id: str, form: FeedbackFields) -> JSONResponse:
        verify_csrf(request, form.csrf)
        principal = signed_in(request, Role.CLINICAL_REVIEWER)
        return feedback_response(principal, request_id, form)
