"""``kpx registry serve``: one ASGI app for the three audiences (DESIGN §13).

Public: ``/verify/{id}``, ``/api/v1/verify/{id}``, ``/statistics`` (+ ``.csv``, ``.json``),
``/log``. Console (logged in): ``/console/…``. Security headers and the body limit wrap
everything (exchange/registry/web/security.py).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from exchange.errors import DatabaseUnavailable
from exchange.registry.web import console, public
from exchange.registry.web.errors import problem
from exchange.registry.web.portal import STATIC, Portal
from exchange.registry.web.security import Guard

log = logging.getLogger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(request, exc.status_code, "Error", str(exc.detail))


async def _busy(request: Request, exc: Exception) -> Response:
    log.warning("portal: database busy or unavailable: %s", exc)
    return problem(request, 503, "Busy", "The registry is busy; try again in a moment.")


def build(portal: Portal, extra_routes: list[object] | None = None) -> Starlette:
    """The portal's ASGI app on ``portal``'s pools and settings."""
    routes = [
        *public.ROUTES,
        *console.ROUTES,
        *(extra_routes or []),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,  # type: ignore[arg-type]
        middleware=[Middleware(Guard)],
        exception_handlers={HTTPException: _http_error, DatabaseUnavailable: _busy},
    )
    app.state.portal = portal
    app.state.log_served = bool(extra_routes)
    return app
