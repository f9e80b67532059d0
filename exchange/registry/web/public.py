"""The public pages: verification (page, form, JSON API), the published statistics and keys.

No login, no JavaScript. Verification and the key list are rate-limited per client and read
through the bounded public pool; statistics are what ``kpx stats`` prints, cached for a few
seconds; the keys are what ``kpx registry keys list --json`` prints (the same function).
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from exchange.domain.kpstats import Period, quarter_of, render
from exchange.errors import ConfigError
from exchange.registry import keys as registry_keys
from exchange.registry.web import figures
from exchange.registry.web.errors import problem
from exchange.registry.web.portal import Portal
from exchange.registry.web.reads import verify
from exchange.web.forms import client_address


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
    return problem(request, 429, "Too many lookups", "Wait a few seconds and try again.")


async def _verdict(request: Request) -> Any:
    portal = _portal(request)
    number = request.path_params["number"]
    return await run_in_threadpool(
        verify, portal.public, number, portal.region.code, portal.today()
    )


async def verify_page(request: Request) -> Response:
    refused = _limited(request)
    if refused is not None:
        return refused
    verdict = await _verdict(request)
    return _portal(request).render(request, "verify.html", {"v": verdict})


async def verify_api(request: Request) -> Response:
    refused = _limited(request)
    if refused is not None:
        return refused
    verdict = await _verdict(request)
    return JSONResponse(verdict.to_json(), headers={"cache-control": "no-store"})


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


async def health(request: Request) -> Response:
    return Response("ok\n", media_type="text/plain")


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
    Route("/healthz", health),
    Route("/verify", verify_form),
    Route("/verify/{number:path}", verify_page),
    Route("/api/v1/verify/{number:path}", verify_api),
    Route("/statistics", statistics),
    Route("/statistics.csv", download_csv),
    Route("/statistics.json", download_json),
    Route("/log", log_page),
    Route("/keys", keys_page),
    Route("/api/v1/keys", keys_api),
]
