"""Logging in and out: rate-limited password checks and a fresh session on every login.

The caller looks the user up (its own tables) and passes the stored hash, or None when there is
no such user; this module decides, counts failures, and answers 429 while an address or a user
name is over the limit — even for the right password, so a guesser learns nothing.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from exchange.web.forms import client_address
from exchange.web.security import RateLimiter, new_csrf_token, verify_nobody, verify_password


def check_password(request: Request, username: str, password: str, stored: str | None) -> bool:
    """True when ``password`` is right for ``username``; HTTPException(429) when rate-limited."""
    by_user: RateLimiter = request.app.state.login_limiter
    by_address: RateLimiter = request.app.state.address_limiter
    user_key, address_key = username.lower(), client_address(request)
    # Guessing one user's password and spraying many users from one address both stop.
    if by_user.blocked(user_key) or by_address.blocked(address_key):
        raise HTTPException(
            429,
            "too many failed sign-ins: wait a few minutes before trying again",
            headers={"Retry-After": str(int(by_user.window))},
        )
    ok = verify_password(stored, password) if stored is not None else verify_nobody(password)
    if ok:
        by_user.reset(user_key)  # the address keeps its count: spraying still stops
    else:
        by_user.fail(user_key)
        by_address.fail(address_key)
    return ok


def begin_session(request: Request, **identity: Any) -> None:
    """Replace the session by one for ``identity`` (a new CSRF token; the language is kept).

    ``signed_at`` (seconds since the epoch) lets a session check refuse sessions older than
    a sign-out or a password reset.
    """
    session = request.scope["session"]
    lang = session.get("lang")
    session.clear()
    session.update(identity, csrf=new_csrf_token(), signed_at=time.time())
    if lang:
        session["lang"] = lang
    request.state.csrf_token = session["csrf"]


def end_session(request: Request) -> None:
    session = request.scope["session"]
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
