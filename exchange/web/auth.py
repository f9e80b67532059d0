"""Logging in and out: rate-limited password checks and a fresh session on every login.

The caller looks the user up (its own tables) and passes the stored hash, or None when there is
no such user; this module decides, counts failures, and answers 429 while an address or a user
name is over the limit — even for the right password, so a guesser learns nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from exchange.web.forms import client_address
from exchange.web.security import RateLimiter, new_csrf_token, verify_nobody, verify_password


def check_password(request: Request, username: str, password: str, stored: str | None) -> bool:
    """True when ``password`` is right for ``username``; HTTPException(429) when rate-limited."""
    limiter: RateLimiter = request.app.state.login_limiter
    address = client_address(request)
    keys = (f"addr:{address}", f"user:{username.lower()}")
    if any(limiter.blocked(key) for key in keys):
        raise HTTPException(
            429,
            "too many failed sign-ins: wait a few minutes before trying again",
            headers={"Retry-After": str(int(limiter.window))},
        )
    ok = verify_password(stored, password) if stored is not None else verify_nobody(password)
    if ok:
        limiter.reset(keys[1])  # the address keeps its count: spraying many users still stops
    else:
        for key in keys:
            limiter.fail(key)
    return ok


def begin_session(request: Request, **identity: Any) -> None:
    """Replace the session by one for ``identity`` (a new CSRF token; the language is kept)."""
    session = request.scope["session"]
    lang = session.get("lang")
    session.clear()
    session.update(identity, csrf=new_csrf_token())
    if lang:
        session["lang"] = lang
    request.state.csrf_token = session["csrf"]


def end_session(request: Request) -> None:
    session = request.scope["session"]
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
