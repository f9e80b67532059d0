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
from exchange.domain.events import DiscrepancyKind
from exchange.errors import KpxError, NotFound, Refusal
from exchange.registry import deadmover, deadstore, reinjection
from exchange.registry.web import accounts, worklist
from exchange.registry.web.accounts import User
from exchange.registry.web.errors import problem
from exchange.registry.web.portal import Portal
from exchange.web import auth
from exchange.web.forms import checked_form

Page = Callable[[Request, Portal, User], Awaitable[Response]]
KINDS = tuple(k.value for k in DiscrepancyKind if k is not DiscrepancyKind.UNKNOWN)


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def page(admin: bool = False) -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    """A console endpoint: logged in (else to the login page), CSRF-checked on POST.

    The user is read again from the database on every request, so a disabled user or a
    changed role takes effect at once, whatever the signed cookie says.
    """

    def wrap(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            portal = _portal(request)
            name = request.scope["session"].get("username")
            user = await portal.db(accounts.user, name) if name else None
            if user is None:
                return RedirectResponse(f"/login?next={request.url.path}", 303)
            if request.method == "POST":
                await checked_form(request)  # HTTPException(403) when the token is wrong
            if admin and not user.is_admin:
                return problem(request, 403, "Forbidden", "Only an admin may do this.")
            return await handler(request, portal, user)

        return endpoint

    return wrap


async def login_form(request: Request) -> Response:
    next_path = _next(request.query_params.get("next"))
    return _portal(request).render(request, "login.html", {"error": "", "next_path": next_path})


def _next(path: str | None) -> str:
    """Only a console path of this site: never an open redirect."""
    return path if path and path.startswith("/console/") and "//" not in path else "/console"


async def login(request: Request) -> Response:
    portal = _portal(request)
    form = await checked_form(request)
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    stored = await portal.db(accounts.stored_hash, username)
    ok = await run_in_threadpool(auth.check_password, request, username, password, stored)
    actor = username[:40] or "?"
    if not ok:
        await portal.db(accounts.audited, actor, "login failed")
        error = request.state.translator.gettext("The user name or password is wrong.")
        context = {"error": error, "next_path": _next(str(form.get("next", "")))}
        return portal.render(request, "login.html", context, 401)
    found = await portal.db(accounts.user, username)
    assert found is not None
    auth.begin_session(request, username=found.username, role=found.role.value)
    await portal.db(accounts.audited, found.username, "login")
    return RedirectResponse(_next(str(form.get("next", ""))), 303)


async def logout(request: Request) -> Response:
    await checked_form(request)
    name = request.scope["session"].get("username")
    if name:
        await _portal(request).db(accounts.sign_out, name)
    auth.end_session(request)
    return RedirectResponse("/", 303)


async def session_check(portal: Portal, session: dict[str, Any]) -> bool:
    """The foundation's hook: is this signed-in session still honoured?"""
    signed_at = session.get("signed_at")
    if not isinstance(signed_at, int | float):
        return False
    return await portal.db(accounts.session_valid, str(session["username"]), float(signed_at))


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
    return portal.render(request, "console_discrepancies.html", {**context, "user": user})


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
    context = {"d": item, "error": error, "user": user}
    return portal.render(request, "console_discrepancy.html", context, 400 if error else 200)


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
    context = {"rows": rows, "error": error, "user": user}
    return portal.render(request, "console_participants.html", context, 400 if error else 200)


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
    return portal.render(request, "console_rejections.html", {"rows": rows, "user": user})


@page()
async def dead_letters(request: Request, portal: Portal, user: User) -> Response:
    """The pending dead letters, a page at a time from the store (registry/deadstore.py)."""
    error = ""
    try:  # what waits in the queue first, so the page is complete with the service down
        await portal.db(deadmover.move_waiting, portal.amqp_url())
    except KpxError as exc:
        error = str(exc)
    after = request.query_params.get("after", "0")
    wanted = deadstore.Filter(after=int(after) if after.isdigit() else 0, limit=_PAGE)
    rows = await portal.db(_page, wanted)
    more = rows[-1].id if len(rows) == _PAGE else None
    context = {"rows": rows, "error": error, "user": user, "more": more}
    return portal.render(request, "console_deadletters.html", context)


_PAGE = 200


def _page(conn: Connection, wanted: deadstore.Filter) -> list[deadstore.Stored]:
    with transaction(conn) as cur:
        return deadstore.page(cur, wanted)


@page(admin=True)
async def reinject(request: Request, portal: Portal, user: User) -> Response:
    form = await request.form()
    chosen = {str(v) for v in form.getlist("message_id")}
    done = await portal.db(
        reinjection.reinject, portal.amqp_url(), portal.broker_user, user.username, chosen
    )
    await portal.db(_audit, user, sorted(chosen), done.rows)
    return RedirectResponse("/console/dead-letters", 303)


def _audit(conn: Connection, user: User, chosen: list[str], count: int) -> None:
    with transaction(conn) as cur:
        accounts.record(cur, user.username, "reinject", ",".join(chosen), f"{count} re-injected")


@page()
async def audit(request: Request, portal: Portal, user: User) -> Response:
    rows = await portal.db(accounts.audit)
    return portal.render(request, "console_audit.html", {"rows": rows, "user": user})


ROUTES = [
    Route("/console", home),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/console/login", login_form, methods=["GET"]),
    Route("/console/discrepancies", discrepancy_list),
    Route("/console/discrepancies/{id:int}", discrepancy, methods=["GET", "POST"]),
    Route("/console/participants", participants, methods=["GET", "POST"]),
    Route("/console/rejections", rejections),
    Route("/console/dead-letters", dead_letters),
    Route("/console/dead-letters/reinject", reinject, methods=["POST"]),
    Route("/console/audit", audit),
]
