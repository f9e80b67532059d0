"""Errors as RFC 9457 problem details under /api/, as the foundation's error page elsewhere."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from exchange.web.app import wants_problem
from exchange.web.problems import ProblemResponse
from exchange.web.templating import render

log = logging.getLogger(__name__)

# (title, detail) of the answers the public lookups share, whichever way they are served.
TOO_MANY = ("Too many lookups", "Wait a few seconds and try again.")
BUSY = ("Busy", "The registry is busy; try again in a moment.")


def busy(exc: Exception) -> None:
    """Log a lookup refused because the database is busy or unavailable (then a 503)."""
    log.warning("portal: database busy or unavailable: %s", exc)


def problem(request: Request, status: int, title: str, detail: str) -> Response:
    """A problem details answer for an API client, the translated error page for a browser."""
    if wants_problem(request):
        return ProblemResponse(status, title, detail)
    translate = request.state.translator.gettext
    return render(request, "error.html", {"status": status, "detail": translate(detail)}, status)
