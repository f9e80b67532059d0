"""The public pages: verification (page, form, JSON API), the published statistics and keys.

No login, no JavaScript. Verification and the key list are rate-limited per client;
verification reads through the portal's non-blocking lookups (lookups.py) and their cache
(verifycache.py; a cached certificate is answered without waiting), the keys through
the bounded public pool; statistics are what ``kpx stats`` prints, cached for a few seconds;
the keys are what ``kpx registry keys list --json`` prints (the same function).

The JSON verification API and ``/healthz`` are :data:`LEAN` routes: answered before the
middleware stack (exchange/web/lean.py), since they need no session, token or language.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from exchange.domain.kpstats import Period, quarter_of, render
from exchange.errors import ConfigError, DatabaseUnavailable
from exchange.registry import keys as registry_keys
from exchange.registry.web import figures
from exchange.registry.web.errors import BUSY, TOO_MANY, busy, problem
from exchange.registry.web.portal import Portal
from exchange.web.forms import client_address, client_host
from exchange.web.lean import JSON_NO_STORE, TEXT, Answer, LeanRoute


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


async def index(request: Request) -> Response:
    return _portal(request).render(request, "index.html", {})


async def verify_form(request: Request) -> Response:
    number = request.query_params.get("id", "").strip()
    if number:
        return RedirectResponse(f"/verify/{quote(number, safe='')}", 303)
    return _portal(request).render(request, "verify_form.html", {})


def _limited(request: Request) -> Response | None:
    """The 429 answer when this client looked up too often (verifications and keys alike)."""
    if _portal(request).verify_limit.allow(client_address(request)):
        return None
    return problem(request, 429, *TOO_MANY)


async def verify_page(request: Request) -> Response:
    refused = _limited(request)
    if refused is not None:
        return refused
    portal = _portal(request)
    number = request.path_params["number"]
    verdict = await portal.lookups.verify(number, portal.region.code, portal.today())
    return portal.render(request, "verify.html", {"v": verdict})


def _list_keys(portal: Portal) -> list[dict[str, Any]]:
    with portal.public.connection() as conn:
        return registry_keys.list_keys(conn)


async def _keys(request: Request) -> list[dict[str, Any]]:
    """Every member's key, as `kpx registry keys list --json` gives them."""
    return await run_in_threadpool(_list_keys, _portal(request))


async def keys_page(request: Request) -> Response:
    refused = _limited(request)
    if refused is not None:
        return refused
    rows = await _keys(request)
    return _portal(request).render(request, "keys.html", {"keys": rows})


async def keys_api(request: Request) -> Response:
    refused = _limited(request)
    if refused is not None:
        return refused
    rows = await _keys(request)
    return JSONResponse(rows, headers={"cache-control": "no-store"})


def _period(request: Request, today: date) -> Period:
    try:
        return Period.parse(request.query_params.get("period") or quarter_of(today))
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


def _earlier_quarters(period: Period, n: int = 4) -> list[str]:
    year, q = period.first.year, (period.first.month - 1) // 3 + 1
    names = []
    for _ in range(n):
        names.append(f"{year}-Q{q}")
        year, q = (year, q - 1) if q > 1 else (year - 1, 4)
    return list(reversed(names))


async def statistics(request: Request) -> Response:
    portal = _portal(request)
    if portal.region.publish_statistics == "none":
        return problem(request, 404, "Not published", "This region does not publish statistics.")
    try:
        period = _period(request, portal.today())
    except ValueError as exc:
        return problem(request, 400, "Bad period", str(exc))
    report = await run_in_threadpool(portal.report, period)
    history = await run_in_threadpool(portal.history, _earlier_quarters(period))
    who = request.query_params.get("participant") or None
    rows = figures.only(report.rows, who)
    context = {
        "report": report,
        "period": period.name,
        "participant": who or "",
        "participants": figures.participants(report.rows),
        "charts": figures.trade_charts(rows),
        "production": figures.production_chart(rows),
        "prices": figures.usd_per_carat_chart(
            {p: figures.only(r, who) for p, r in history.items()}
        ),
        "trade": figures.table(rows, "trade"),
        "production_rows": figures.table(rows, "production"),
        "mirror": figures.mirror_lines(rows, portal.region.policy.tolerances.mirror_pct),
        "versions": await run_in_threadpool(portal.versions, period.name),
    }
    return portal.render(request, "statistics.html", context)


async def download_csv(request: Request) -> Response:
    return await _download(request, "csv")


async def download_json(request: Request) -> Response:
    return await _download(request, "json")


async def _download(request: Request, fmt: str) -> Response:
    portal = _portal(request)
    if portal.region.publish_statistics == "none":
        return problem(request, 404, "Not published", "This region does not publish statistics.")
    try:
        period = _period(request, portal.today())
    except ValueError as exc:
        return problem(request, 400, "Bad period", str(exc))
    report = await run_in_threadpool(portal.report, period)
    media = {"csv": "text/csv; charset=utf-8", "json": "application/json"}[fmt]
    return Response(
        render(report, fmt).encode("utf-8"),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="kp-{period.name}.{fmt}"'},
    )


async def log_page(request: Request) -> Response:
    return _portal(request).render(
        request, "log.html", {"log_served": request.app.state.log_served}
    )


ROUTES = [
    Route("/", index),
    Route("/verify", verify_form),
    Route("/verify/{number:path}", verify_page),
    Route("/statistics", statistics),
    Route("/statistics.csv", download_csv),
    Route("/statistics.json", download_json),
    Route("/log", log_page),
    Route("/keys", keys_page),
    Route("/api/v1/keys", keys_api),
]


_OK = Answer(200, b"ok\n", TEXT)


def lean_routes(portal: Portal) -> list[LeanRoute]:
    """``/api/v1/verify/{id}`` (DESIGN §13's fields, rate-limited per client) and
    ``/healthz``, on ``portal``."""

    async def verify_api(scope: Scope, number: str) -> Answer:
        if not portal.verify_limit.allow(client_host(scope)):
            return Answer.problem(429, *TOO_MANY)
        today = portal.today()
        # A certificate in the cache is answered here and now, its body encoded once a day:
        # no future, no waiting for the loop's next iteration.
        body = portal.lookups.cached_body(number, today)
        if body is not None:
            return Answer(200, body, JSON_NO_STORE)
        try:
            verdict = await portal.lookups.verify(number, portal.region.code, today, asked=True)
        except DatabaseUnavailable as exc:
            busy(exc)
            return Answer.problem(503, *BUSY)
        return Answer.json(verdict.to_json())

    async def health(scope: Scope, rest: str) -> Answer:
        return _OK

    return [LeanRoute("/api/v1/verify/", verify_api, prefix=True), LeanRoute("/healthz", health)]
