"""Errors as RFC 9457 problem details for the API, as a page for a browser."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


def problem(request: Request, status: int, title: str, detail: str) -> Response:
    """``application/problem+json`` under /api/, else the error page in the user's language."""
    if request.url.path.startswith("/api/"):
        return JSONResponse(
            {"type": "about:blank", "title": title, "status": status, "detail": detail,
             "instance": request.url.path},
            status,
            media_type="application/problem+json",
        )  # fmt: skip
    portal = request.app.state.portal
    page: Response = portal.render(
        request, "error.html", {"status": status, "title": title, "detail": detail}, status
    )
    return page
