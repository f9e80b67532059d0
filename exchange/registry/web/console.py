"""The regional console: login, the discrepancy worklist, participants, rejections, dead letters.

Every page needs a session; every form that changes something carries the session's CSRF
token; admin-only acts (suspend, reinstate, reinject) are refused to an analyst; every act is
audited with who and when (exchange/registry/web/worklist.py, accounts.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.adapters.postgres import Connection, transaction
from exchange.errors import KpxError, NotFound, Refusal
from exchange.reconciler.commands import KINDS
from exchange.registry import deadletters
from exchange.registry.web import accounts, worklist
from exchange.registry.web.accounts import User
from exchange.registry.web.errors import problem
from exchange.registry.web.portal import Portal
from exchange.registry.web.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    client_of,
    new_token,
    same,
    set_cookie,
)

Page = Callable[[Request, Portal, User], Awaitable[Response]]


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


async def _user(portal: Portal, request: Request) -> User | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await portal.db(accounts.session_user, token)


def page(admin: bool = False) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """A console endpoint: logged in (else to the login page), CSRF-checked on POST."""

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            portal = _portal(request)
            user = await _user(portal, request)
            if user is None:
                return RedirectResponse("/console/login", 303)
            if request.method == "POST":
                form = await request.form()
                if not same(str(form.get("csrf", "")), user.csrf_token):
                    return problem(request, 403, "Forbidden", "The form expired; reload it.")
            if admin and not user.is_admin:
                return problem(request, 403, "Forbidden", "Only an admin may do this.")
            return await handler(request, portal, user)

        return endpoint

    return wrap


async def login_form(request: Request, error: str = "", status: int = 200) -> Response:
    token = new_token()
    response = _portal(request).render(
        request, "login.html", {"csrf": token, "error": error}, status
    )
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token, path="/console/login")
    return response


async def login(request: Request) -> Response:
    portal = _portal(request)
    form = await request.form()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    if not same(str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return await login_form(request, "The form expired; try again.", 403)
    if not portal.login_limit.allow(f"{client_of(request)}|{username.lower()}"):
        return await login_form(request, "Too many attempts; wait a minute.", 429)
    token = await portal.db(accounts.login, username, password)
    if token is None:
        return await login_form(request, "Wrong username or password.", 401)
    response = RedirectResponse("/console/discrepancies", 303)
    set_cookie(response, request, SESSION_COOKIE, token, path="/console")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console/login")
    return response


@page()
async def logout(request: Request, portal: Portal, user: User) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    await portal.db(accounts.logout, token, user.username)
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/console/discrepancies", 303)


@page()
async def discrepancy_list(request: Request, portal: Portal, user: User) -> Response:
    names = ("kind", "participant", "period", "status")
    filters: dict[str, str | None] = {n: request.query_params.get(n) or None for n in names}
    if filters["participant"]:
        filters["participant"] = str(filters["participant"]).upper()
    items = await portal.db(worklist.discrepancies, filters)
    context = {"items": items, "filters": filters, "kinds": KINDS}
    return portal.render(request, "console_discrepancies.html", context, user=user)


@page()
async def discrepancy(request: Request, portal: Portal, user: User) -> Response:
    number = int(request.path_params["id"])
    error = ""
    if request.method == "POST":
        form = await request.form()
        error = await run_in_threadpool(_annotate, portal, user, number, form)
        if not error:
            return RedirectResponse(f"/console/discrepancies/{number}", 303)
    try:
        item = await portal.db(worklist.detail, number)
    except NotFound as exc:
        return problem(request, 404, "Not found", str(exc))
    context = {"d": item, "error": error}
    return portal.render(request, "console_discrepancy.html", context, 400 if error else 200, user)


def _annotate(portal: Portal, user: User, number: int, form: FormData) -> str:
    action = str(form.get("action", ""))
    if action not in ("resolve", "reopen"):
        return "Choose resolve or reopen."
    try:
        with portal.work.connection() as conn:
            worklist.annotate(conn, user, number, action, str(form.get("note", "")))
    except (Refusal, NotFound) as exc:
        return exc.sentence if isinstance(exc, Refusal) else str(exc)
    return ""


@page()
async def participants(request: Request, portal: Portal, user: User) -> Response:
    error = ""
    if request.method == "POST":
        form = await request.form()
        error = await run_in_threadpool(_change, portal, user, form)
        if not error:
            return RedirectResponse("/console/participants", 303)
    rows = await portal.db(worklist.participants)
    context = {"rows": rows, "error": error}
    return portal.render(request, "console_participants.html", context, 400 if error else 200, user)


def _change(portal: Portal, user: User, form: FormData) -> str:
    code = str(form.get("code", "")).upper()
    try:
        with portal.work.connection() as conn:
            worklist.change_status(
                conn, portal.schemas, portal.signer(), portal.region, user,
                str(form.get("action", "")), code, str(form.get("reason", "")), portal.today(),
            )  # fmt: skip
    except Refusal as exc:
        return f"{exc.code}: {exc.sentence}"
    return ""


@page()
async def rejections(request: Request, portal: Portal, user: User) -> Response:
    rows = await portal.db(worklist.rejections)
    return portal.render(request, "console_rejections.html", {"rows": rows}, user=user)


@page()
async def dead_letters(request: Request, portal: Portal, user: User) -> Response:
    error = ""
    try:
        found: list[dict[str, Any]] = await run_in_threadpool(
            deadletters.list_dead, portal.amqp_url()
        )
    except KpxError as exc:
        found, error = [], str(exc)
    context = {"rows": found, "error": error}
    return portal.render(request, "console_deadletters.html", context, user=user)


@page(admin=True)
async def reinject(request: Request, portal: Portal, user: User) -> Response:
    form = await request.form()
    chosen = {str(v) for v in form.getlist("message_id")}
    count = await run_in_threadpool(
        deadletters.reinject, portal.amqp_url(), portal.broker_user, chosen
    )
    await portal.db(_audit, user, sorted(chosen), count)
    return RedirectResponse("/console/dead-letters", 303)


def _audit(conn: Connection, user: User, chosen: list[str], count: int) -> None:
    with transaction(conn) as cur:
        accounts.record(cur, user.username, "reinject", ",".join(chosen), f"{count} re-injected")


@page()
async def audit(request: Request, portal: Portal, user: User) -> Response:
    rows = await portal.db(accounts.audit)
    return portal.render(request, "console_audit.html", {"rows": rows}, user=user)


ROUTES = [
    Route("/console", home),
    Route("/console/login", login_form, methods=["GET"]),
    Route("/console/login", login, methods=["POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    Route("/console/discrepancies", discrepancy_list),
    Route("/console/discrepancies/{id:int}", discrepancy, methods=["GET", "POST"]),
    Route("/console/participants", participants, methods=["GET", "POST"]),
    Route("/console/rejections", rejections),
    Route("/console/dead-letters", dead_letters),
    Route("/console/dead-letters/reinject", reinject, methods=["POST"]),
    Route("/console/audit", audit),
]
