"""Signing in and out, and the start page."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from exchange.adapters.postgres import Cursor
from exchange.web import auth
from exchange.web.forms import checked_form, client_address
from exchange.web.templating import render
from nodes.web import access
from nodes.web.access import Principal
from nodes.web.context import db, signed_in


def _safe_next(value: object) -> str:
    """Only a path on this site: an open redirect would help a phishing page."""
    text = value if isinstance(value, str) else "/"
    return text if text.startswith("/") and not text.startswith("//") else "/"


async def login_page(request: Request) -> Response:
    return render(
        request, "login.html", {"next_path": _safe_next(request.query_params.get("next"))}
    )


async def login(request: Request) -> Response:
    form = await checked_form(request)
    username = str(form.get("username", ""))[:100]
    password = str(form.get("password", ""))[:1000]
    found = await db(request, lambda cur: access.user_for_login(cur, username))
    address = client_address(request)
    if not auth.check_password(request, username, password, found[0] if found else None):
        await db(
            request,
            lambda cur: access.audit(
                cur, Principal("user", username, "", address=address), "sign-in refused"
            ),
        )
        error = request.state.translator.gettext("The user name or password is wrong.")
        return render(request, "login.html", {"error": error, "next_path": "/"}, status=401)
    assert found is not None
    _, role, full_name = found
    auth.begin_session(request, username=username, role=role, full_name=full_name)
    who = Principal("user", username, role, full_name, address)
    await db(request, lambda cur: access.audit(cur, who, "signed in"))
    return RedirectResponse(_safe_next(form.get("next")), status_code=303)


async def logout(request: Request) -> Response:
    await checked_form(request)
    who = signed_in(request)
    if who is not None:

        def sign_out(cur: Cursor) -> None:
            access.end_sessions(cur, who.name)
            access.audit(cur, who, "signed out")

        await db(request, sign_out)
    auth.end_session(request)
    return RedirectResponse("/login", status_code=303)


async def home(request: Request) -> Response:
    return RedirectResponse("/certificates" if signed_in(request) else "/login", status_code=303)


async def healthz(request: Request) -> Response:
    """Liveness for supervisors and the demo: the app answers and its database does."""
    await db(request, lambda cur: cur.execute("SELECT 1"))
    return PlainTextResponse("ok")


routes = [
    Route("/", home),
    Route("/healthz", healthz),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
