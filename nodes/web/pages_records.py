"""Production declarations, this member's discrepancies and rejections, and the audit export."""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.web.forms import checked_form
from exchange.web.templating import render
from nodes.web import access, acts, issue_form, queries
from nodes.web.context import db, listing, require, web
from nodes.web.reasons import explain

PRODUCTION_FIELDS = ("period", "producer", "carats", "value_usd")


async def production_page(
    request: Request,
    values: dict[str, str] | None = None,
    errors: dict[str, Any] | None = None,
    general: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    who = require(request)
    rows = await db(request, queries.production)
    return render(
        request,
        "production.html",
        {
            "rows": rows,
            "values": values or {},
            "errors": errors or {},
            "general": general,
            "can_act": who.can_act,
        },
        status=status,
    )


async def production_post(request: Request) -> Response:
    who = require(request, act=True)
    values = issue_form.values_of(await checked_form(request))
    op = {"op": "declare_production", **{f: values.get(f, "").strip() for f in PRODUCTION_FIELDS}}
    [result] = await run_in_threadpool(acts.apply, web(request), who, [op])
    if result.ok:
        return RedirectResponse("/production", status_code=303)
    shown = explain(request.state.translator.gettext, result.code, result.sentence)
    field = next((f for f in PRODUCTION_FIELDS if result.sentence.startswith(f)), None)
    return await production_page(
        request, values, {field: shown} if field else {}, None if field else shown, 422
    )


async def discrepancies_page(request: Request) -> Response:
    require(request)
    found = await listing(request, queries.discrepancies)
    return render(request, "discrepancies.html", found.context())


async def rejections_page(request: Request) -> Response:
    require(request)
    found = await listing(request, queries.rejections)
    return render(request, "rejections.html", found.context())


async def audit_csv(request: Request) -> Response:
    """Every recorded act as CSV (an auditor's export)."""
    require(request)
    rows = await db(request, access.audit_export)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("audit_id", "at", "actor", "role", "address", "action", "subject", "detail"))
    for row in rows:
        # A cell starting with = + - @ would be a formula in a spreadsheet: quote it as text.
        writer.writerow(["'" + c if isinstance(c, str) and c[:1] in "=+-@" else c for c in row])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="audit.csv"'},
    )


routes = [
    Route("/production", production_page, methods=["GET"]),
    Route("/production", production_post, methods=["POST"]),
    Route("/discrepancies", discrepancies_page),
    Route("/rejections", rejections_page),
    Route("/audit.csv", audit_csv),
]
