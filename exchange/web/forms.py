"""Forms: every POST from a page carries the session's CSRF token, checked here.

A missing or wrong token is a 403, whatever the form: a page never reads a form another way.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Scope

from exchange.web.security import csrf_matches

CSRF_FIELD = "csrf_token"


async def checked_form(request: Request) -> FormData:
    """The posted form once its CSRF token matches the session's; HTTPException(403) if not."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not csrf_matches(
        request.scope["session"].get("csrf"), given if isinstance(given, str) else None
    ):
        raise HTTPException(403, "the form is stale or was not sent by this site: reload the page")
    return form


def client_address(request: Request) -> str:
    """The peer address as the socket saw it (proxy headers are not trusted)."""
    return client_host(request.scope)


def client_host(scope: Scope) -> str:
    """:func:`client_address` from the ASGI scope alone (the lean lane has no Request)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
