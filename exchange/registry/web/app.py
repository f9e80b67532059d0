"""``kpx registry serve``: one ASGI app for the three audiences (DESIGN §13).

Public: ``/verify/{id}``, ``/api/v1/verify/{id}``, ``/statistics`` (+ ``.csv``, ``.json``),
``/log`` (how to check the log), ``/keys`` and ``/api/v1/keys`` (the members' public keys),
``/log/checkpoint`` and ``/log/tile/…`` (C2SP tlog-tiles).
Console (logged in): ``/console/…``. Built with the shared foundation (exchange/web/app.py):
its security headers, body limit, signed sessions, CSRF, login rate limit, translations and
problem details apply to every page here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from exchange.errors import DatabaseUnavailable
from exchange.registry.web import console, logroutes, public
from exchange.registry.web.errors import problem
from exchange.registry.web.portal import Portal
from exchange.web.app import build_app
from exchange.web.security import WebSecurity

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
NAV = (
    ("/verify", "Verify"),
    ("/statistics", "Statistics"),
    ("/log", "Log"),
    ("/keys", "Keys"),
    ("/console", "Console"),
)
# The console's forms are small; nothing here takes an upload.
SECURITY = WebSecurity(max_body_bytes=64 * 1024)


async def _busy(request: Request, exc: Exception) -> Response:
    log.warning("portal: database busy or unavailable: %s", exc)
    return problem(request, 503, "Busy", "The registry is busy; try again in a moment.")


def build(portal: Portal, secret: bytes) -> Starlette:
    """The portal's ASGI app on ``portal``'s pools and settings; ``secret`` signs sessions."""
    routes: list[BaseRoute] = [
        *public.ROUTES,
        *console.ROUTES,
        *logroutes.ROUTES,
        Mount("/portal-static", StaticFiles(directory=STATIC), name="portal-static"),
    ]
    app = build_app(
        routes,
        title=f"{portal.region.code} · KP registry",
        secret=secret,
        packages=["exchange.registry.web"],
        nav=NAV,
        security=SECURITY,
        state={"portal": portal, "log_served": True},
        session_check=lambda session: console.session_check(portal, session),
    )
    app.add_exception_handler(DatabaseUnavailable, _busy)
    return app
