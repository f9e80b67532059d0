"""Imports: the shipments announced to this participant, and confirming one (the form
pre-filled from the ShipmentExpected notice, so the officer corrects only what differs)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.web.forms import checked_form
from exchange.web.templating import render
from nodes.web import acts, issue_form, queries
from nodes.web.context import db, listing, require, web
from nodes.web.reasons import explain

CONFIRM_FIELDS = ("received_on", "parcels", "carats", "value_usd", "remarks")


async def shipments_page(request: Request) -> Response:
    require(request)
    everything = request.query_params.get("all") == "1"
    found = await listing(
        request, lambda cur, q, page, size: queries.shipments(cur, q, page, size, not everything)
    )
    return render(request, "shipments.html", found.context() | {"everything": everything})


def prefilled(body: dict[str, Any], today: str) -> dict[str, str]:
    """The confirmation form's values from the notice: what the certificate announced."""
    return {
        "received_on": today,
        "parcels": str(body.get("number_of_parcels", "")),
        "carats": str(body.get("total_carats", "")),
        "value_usd": str(body.get("total_value_usd", "")),
        "seal_intact": "yes",
        "remarks": "",
    }


async def confirm_page(request: Request) -> Response:
    require(request, act=True)
    shipment = await _shipment(request)
    values = prefilled(shipment["body"], web(request).node.today().isoformat())
    return _show(request, shipment, values, {}, None)


def _show(
    request: Request,
    shipment: dict[str, Any],
    values: dict[str, str],
    errors: dict[str, Any],
    general: dict[str, str] | None,
    status: int = 200,
) -> Response:
    return render(
        request,
        "confirm.html",
        {
            "s": shipment,
            "body": shipment["body"],
            "values": values,
            "errors": errors,
            "general": general,
        },
        status=status,
    )


async def _shipment(request: Request) -> dict[str, Any]:
    certificate_id = request.path_params["certificate_id"][:200]
    shipment = await db(request, lambda cur: queries.shipment(cur, certificate_id))
    if shipment is None:
        raise HTTPException(404, f"no shipment under certificate {certificate_id} is expected")
    return shipment


async def confirm_post(request: Request) -> Response:
    who = require(request, act=True)
    values = issue_form.values_of(await checked_form(request))
    shipment = await _shipment(request)
    op: dict[str, Any] = {
        "op": "confirm_import",
        "certificate_id": shipment["certificate_id"],
        "issuing_participant": shipment["issuing_participant"],
        "received_on": values.get("received_on", "").strip(),
        "parcels": _integer(values.get("parcels", "")),
        "carats": values.get("carats", "").strip(),
        "value_usd": values.get("value_usd", "").strip(),
        "seal_intact": values.get("seal_intact") == "yes",
        "remarks": values.get("remarks", "").strip(),
    }
    [result] = await run_in_threadpool(acts.apply, web(request), who, [op])
    if result.ok:
        return RedirectResponse("/shipments?confirmed=" + result.subject, status_code=303)
    shown = explain(request.state.translator.gettext, result.code, result.sentence)
    field = next((f for f in CONFIRM_FIELDS if result.sentence.startswith(f)), None)
    errors = {field: shown} if field else {}
    return _show(request, shipment, values, errors, None if field else shown, status=422)


def _integer(text: str) -> Any:
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


routes = [
    Route("/shipments", shipments_page),
    Route("/shipments/{certificate_id}/confirm", confirm_page, methods=["GET"]),
    Route("/shipments/{certificate_id}/confirm", confirm_post, methods=["POST"]),
]
