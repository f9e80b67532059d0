"""The app factory: one Starlette application with every web face's common machinery.

Middleware, outermost first: security headers (on every answer, errors included), the body
limit (413 before the body is read), the signed session, then the request context (language,
CSRF token). Errors become RFC 9457 problem details under ``/api/`` and an HTML page elsewhere.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from exchange.web import i18n, templating
from exchange.web.middleware import BodyLimit, SecurityHeaders
from exchange.web.problems import ProblemResponse
from exchange.web.security import RateLimiter, WebSecurity, new_csrf_token
from exchange.web.sessions import SessionMiddleware

log = logging.getLogger(__name__)


SessionCheck = Callable[[dict[str, Any]], Awaitable[bool]]


class RequestContext:
    """Sets ``request.state.translator`` and ``csrf_token``; ``?lang=xx`` switches language.

    With ``session_check``, a signed-in session the app no longer honours (signed out
    elsewhere, user disabled, password reset) is emptied before any page sees it: a cookie
    is signed, not stored, so only the app's own record can revoke it.
    """

    def __init__(
        self, app: ASGIApp, catalogues: dict[str, Any], session_check: SessionCheck | None
    ) -> None:
        self.app = app
        self.catalogues = catalogues
        self.session_check = session_check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        session = scope["session"]
        revoked = (
            self.session_check is not None
            and bool(session.get("username"))
            and not await self.session_check(dict(session))
        )
        if revoked:
            lang = session.get("lang")
            session.clear()
            if lang:
                session["lang"] = lang
        chosen = request.query_params.get("lang")
        if chosen in i18n.LANGUAGES and session.get("lang") != chosen:
            session["lang"] = chosen
        lang = session.get("lang")
        if lang not in i18n.LANGUAGES:
            lang = i18n.negotiate(request.headers.get("accept-language"))
        # Pages need a CSRF token in the session; API calls (bearer tokens) need no cookie.
        if "csrf" not in session and not request.url.path.startswith("/api/"):
            session["csrf"] = new_csrf_token()
        state = scope.setdefault("state", {})
        state["translator"] = i18n.Translator(lang, self.catalogues[lang])
        state["csrf_token"] = session.get("csrf", "")
        await self.app(scope, receive, send)


def build_app(
    routes: Sequence[BaseRoute],
    *,
    title: str,
    secret: bytes,
    packages: Sequence[str] = (),
    nav: Sequence[tuple[str, str]] = (),
    security: WebSecurity | None = None,
    state: dict[str, Any] | None = None,
    session_check: SessionCheck | None = None,
) -> Starlette:
    """A web face: ``routes`` plus ``/static`` (the shared CSS), with templates and catalogues
    taken from each of ``packages`` (``templates/`` and ``locale/`` beside the code).

    ``nav`` is the menu of the base layout: (path, untranslated label) pairs.
    ``session_check(session)`` says whether a signed-in session is still honoured.
    """
    security = security or WebSecurity()
    catalogues = i18n.load_catalogues(packages)
    static = Mount("/static", StaticFiles(packages=[("exchange.web", "static")]), name="static")
    app = Starlette(
        routes=[*routes, static],
        middleware=[
            Middleware(SecurityHeaders, headers=security.headers),
            Middleware(BodyLimit, limit=security.max_body_bytes),
            Middleware(SessionMiddleware, secret=secret, security=security),
            Middleware(RequestContext, catalogues=catalogues, session_check=session_check),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.templates = templating.environment(packages)
    app.state.title = title
    app.state.nav = list(nav)
    app.state.security = security
    window = security.login_window_seconds
    app.state.login_limiter = RateLimiter(security.login_attempts, window)
    app.state.address_limiter = RateLimiter(security.login_attempts_per_address, window)
    for key, value in (state or {}).items():
        setattr(app.state, key, value)
    return app


def wants_problem(request: Request) -> bool:
    """API paths and clients that ask for JSON get problem details; browsers get a page."""
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/api/") or ("json" in accept and "html" not in accept)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if wants_problem(request) or getattr(request.state, "translator", None) is None:
        return ProblemResponse(exc.status_code, detail=str(exc.detail), headers=headers)
    response = templating.render(
        request, "error.html", {"status": exc.status_code, "detail": exc.detail}, exc.status_code
    )
    response.headers.update(headers)
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return ProblemResponse(500, detail="an internal error; it was logged")


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve ``app`` with uvicorn until SIGINT/SIGTERM (uvicorn drains open requests).

    With ``certfile`` and ``keyfile`` it serves TLS itself (and session cookies are Secure);
    behind a TLS proxy on the same host, the proxy's ``X-Forwarded-Proto`` does the same
    (uvicorn trusts proxy headers from 127.0.0.1 only).
    """
    # uvicorn drains on SIGTERM, then raises the signal again under the handler it found; the
    # services of kpx exit 0 after draining on SIGTERM, so the handler it finds does nothing.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(
            app, host=host, port=port, log_level=log_level, server_header=False,
            ssl_certfile=certfile, ssl_keyfile=keyfile,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
