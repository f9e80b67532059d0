"""The lean lane: a few public GETs answered before the middleware stack, same headers.

An unauthenticated JSON lookup needs no session cookie, no CSRF token, no language and no
template, yet through the full stack (exchange/web/app.py) each of those costs it a middleware
layer, and a verification flood pays them thousands of times a second. :class:`LeanLane`
sits outside the app: a GET or HEAD whose path is one of its routes is answered by the
route's handler straight onto the connection, with the security headers of
:class:`~exchange.web.security.WebSecurity` (the same ones :class:`SecurityHeaders` adds),
precomputed as bytes; everything else goes to the app untouched. A request carrying a body
larger than the limit, or a streamed one, also goes to the app, whose body limit answers it.

Each route is registered with the app as well (:func:`app_routes`), through the same
handler, so the answer is the same whichever way a request comes in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from exchange.web.problems import MEDIA_TYPE, problem_bytes
from exchange.web.security import WebSecurity

log = logging.getLogger(__name__)

Headers = tuple[tuple[bytes, bytes], ...]
JSON: Headers = ((b"content-type", b"application/json"),)
JSON_NO_STORE: Headers = (*JSON, (b"cache-control", b"no-store"))
TEXT: Headers = ((b"content-type", b"text/plain; charset=utf-8"),)
PROBLEM: Headers = ((b"content-type", MEDIA_TYPE.encode()),)

# Byte for byte what Starlette's JSONResponse writes, with the encoder built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer: status, body, and its own headers (content-length and the security
    headers are added by the lane)."""

    status: int
    body: bytes
    headers: Headers

    @classmethod
    def json(cls, value: Any, headers: Headers = JSON_NO_STORE, status: int = 200) -> Answer:
        return cls(status, _ENCODER.encode(value).encode(), headers)

    @classmethod
    def problem(cls, status: int, title: str, detail: str) -> Answer:
        return cls(status, problem_bytes(status, title, detail), PROBLEM)


Handler = Callable[[Scope, str], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class LeanRoute:
    """``path`` exactly, or with ``prefix`` every path below it (the rest is the handler's
    second argument, percent-decoded as the app's ``{name:path}`` would give it)."""

    path: str
    handler: Handler
    prefix: bool = False


_INTERNAL = Answer.problem(500, "Internal Server Error", "an internal error; it was logged")


class LeanLane:
    """The ASGI app in front of ``app``: ``routes`` answered directly, the rest passed on."""

    def __init__(self, app: ASGIApp, routes: Sequence[LeanRoute], security: WebSecurity) -> None:
        self.app = app
        self._exact = {r.path: r.handler for r in routes if not r.prefix}
        self._prefixes = tuple((r.path, r.handler) for r in routes if r.prefix)
        self._limit = security.max_body_bytes
        self._security = tuple((n.encode(), v.encode()) for n, v in security.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        handler, rest = found
        try:
            answer = await handler(scope, rest)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            answer = _INTERNAL
        await self._send(send, answer, scope["method"] == "HEAD")

    def _match(self, scope: Scope) -> tuple[Handler, str] | None:
        if scope["method"] not in ("GET", "HEAD") or not self._bodiless(scope):
            return None
        path: str = scope["path"]
        handler = self._exact.get(path)
        if handler is not None:
            return handler, ""
        for prefix, handler in self._prefixes:
            if path.startswith(prefix):
                return handler, path[len(prefix) :]
        return None

    def _bodiless(self, scope: Scope) -> bool:
        """No body the app's limit would refuse: none streamed, none declared too large."""
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                return False
            if name == b"content-length" and (not value.isdigit() or int(value) > self._limit):
                return False
        return True

    async def _send(self, send: Send, answer: Answer, head: bool) -> None:
        length = (b"content-length", str(len(answer.body)).encode())
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [*answer.headers, length, *self._security],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else answer.body})


def app_routes(routes: Sequence[LeanRoute]) -> list[Route]:
    """The same routes for the app behind the lane (requests the lane passes on)."""
    return [_route(r) for r in routes]


def _route(route: LeanRoute) -> Route:
    async def endpoint(request: Request) -> Response:
        answer = await route.handler(request.scope, request.path_params.get("rest", ""))
        response = Response(answer.body, status_code=answer.status)
        response.raw_headers = [*answer.headers, *response.raw_headers]
        return response

    return Route(route.path + ("{rest:path}" if route.prefix else ""), endpoint)
