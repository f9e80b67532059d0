"""Signed session cookies: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when served over TLS.

The cookie holds a small JSON payload (who is logged in, their CSRF token, the language) and an
HMAC-SHA256 of it under the app's secret; a cookie whose signature or expiry fails is ignored,
never an error. Signing, not encrypting: the payload names a user and holds no secret the user
may not see. Pure ASGI so that it works under every route, including the exception handlers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.web.security import WebSecurity


def sign(secret: bytes, payload: dict[str, Any], now: float | None = None) -> str:
    """The cookie value for ``payload`` (with its issue time)."""
    body = dict(payload, _t=int(now if now is not None else time.time()))
    data = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    mac = hmac.new(secret, data.encode(), hashlib.sha256).hexdigest()
    return f"{data}.{mac}"


def unsign(secret: bytes, value: str, max_age: int, now: float | None = None) -> dict[str, Any]:
    """The payload of a cookie value; empty when forged, malformed or older than ``max_age``."""
    data, _, mac = value.rpartition(".")
    expected = hmac.new(secret, data.encode(), hashlib.sha256).hexdigest()
    if not data or not hmac.compare_digest(mac.encode(), expected.encode()):
        return {}
    try:
        body = json.loads(base64.urlsafe_b64decode(data.encode()))
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    issued = body.pop("_t", 0)
    current = now if now is not None else time.time()
    if not isinstance(issued, int) or current - issued > max_age:
        return {}
    return body


class SessionMiddleware:
    """Puts ``scope["session"]`` (a dict) on every request; writes it back when it changed."""

    def __init__(self, app: ASGIApp, secret: bytes, security: WebSecurity) -> None:
        self.app = app
        self.secret = secret
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self._load(scope)
        original = dict(session)
        scope["session"] = session

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and scope["session"] != original:
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", self._cookie(scope, scope["session"]))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _load(self, scope: Scope) -> dict[str, Any]:
        for name, value in scope["headers"]:
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # a malformed Cookie header is no session, not an error
                    continue
                morsel = jar.get(self.security.cookie_name)
                if morsel is not None:
                    return unsign(self.secret, morsel.value, self.security.session_seconds)
        return {}

    def _cookie(self, scope: Scope, session: MutableMapping[str, Any]) -> str:
        name = self.security.cookie_name
        flags = "; Path=/; HttpOnly; SameSite=Strict"
        if scope.get("scheme") == "https":
            flags += "; Secure"
        if not session:
            return f"{name}=; Max-Age=0{flags}"
        value = sign(self.secret, dict(session))
        return f"{name}={value}; Max-Age={self.security.session_seconds}{flags}"
