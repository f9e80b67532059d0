"""``kpx registry serve``: one ASGI app for the three audiences (DESIGN §13).

Public: ``/verify/{id}``, ``/api/v1/verify/{id}``, ``/statistics`` (+ ``.csv``, ``.json``),
``/log`` (how to check the log), ``/keys`` and ``/api/v1/keys`` (the members' public keys),
``/log/checkpoint`` and ``/log/tile/…`` (C2SP tlog-tiles).
Console (logged in): ``/console/…``. Built with the shared foundation (exchange/web/app.py):
its security headers, body limit, signed sessions, CSRF, login rate limit, translations and
problem details apply to every page here. ``/api/v1/verify/{id}`` and ``/healthz`` are answered
in front of that stack by the foundation's lean lane (exchange/web/lean.py), with the same
security headers: a border officer's lookup needs no session, token or language.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from exchange.errors import DatabaseUnavailable
from exchange.registry.web import console, logroutes, public
from exchange.registry.web.errors import BUSY, busy, problem
from exchange.registry.web.portal import Portal
from exchange.web.app import build_app
from exchange.web.lean import LeanLane, app_routes
from exchange.web.security import WebSecurity

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
    busy(exc)
    return problem(request, 503, *BUSY)


def build(portal: Portal, secret: bytes) -> LeanLane:
    """The portal's ASGI app on ``portal``'s pools and settings; ``secret`` signs sessions.

    The public JSON lookups go through the lean lane in front of the app (public.lean_routes).
    """
    lean = public.lean_routes(portal)
    routes: list[BaseRoute] = [
        *app_routes(lean),
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
    return LeanLane(app, lean, SECURITY)
