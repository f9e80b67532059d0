"""The node's HTTP API for national systems (DESIGN §13): JSON in, JSON out, problem details.

``POST /api/v1/operations`` takes a JSON array of §9 operation objects and answers one result
per element, in order. It goes through the same ``Node.submit`` as ``kpx node submit``, so a
``request_id`` already applied is answered again, never applied twice: a national system may
retry after a timeout without fear.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from exchange.web.forms import client_address
from exchange.web.problems import ProblemResponse
from exchange.wire.envelope import MAX_EVENT_BYTES
from nodes.operations import Result
from nodes.web import access, acts, queries
from nodes.web.access import Principal
from nodes.web.context import Listing, db, listing, signed_in, web
from nodes.web.openapi import document
from nodes.web.pages_certificates import certificate_view, pdf_response

MAX_OPERATIONS = 1000  # per request; a larger batch is split by the caller


class Unauthorised(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _principal(request: Request, *, act: bool = False) -> Principal:
    header = request.headers.get("authorization", "")
    who: Principal | None
    if header.lower().startswith("bearer "):
        token = header[7:].strip()[:200]
        address = client_address(request)
        who = await db(request, lambda cur: access.token_principal(cur, token, address))
    else:
        who = signed_in(request)
    if who is None:
        raise Unauthorised(
            ProblemResponse(
                401,
                detail="send Authorization: Bearer <token> (kpx node tokens create)",
                headers={"WWW-Authenticate": 'Bearer realm="kpx"'},
            )
        )
    if act and not who.can_act:
        raise Unauthorised(ProblemResponse(403, detail=f"a {who.role} may only read"))
    return who


def _guarded(handler: Any, *, act: bool = False) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            who = await _principal(request, act=act)
        except Unauthorised as refused:
            return refused.response
        response: Response = await handler(request, who)
        return response

    return endpoint


def _result_json(result: Result, op: Any) -> dict[str, Any]:
    is_cert = isinstance(op, dict) and op.get("op") != "declare_production"
    return {
        "line": result.line,
        "status": "ok" if result.ok else "refused",
        "certificate_id": result.subject if result.ok and is_cert else None,
        "subject": result.subject if result.ok else None,
        "reason": None if result.ok else result.code,
        "sentence": None if result.ok else result.sentence,
        "already_applied": result.already,
    }


async def operations(request: Request, who: Principal) -> Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return ProblemResponse(415, detail="send the operations as application/json")
    body = await request.body()
    try:
        ops = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        return ProblemResponse(400, detail=f"the body is not JSON: {exc}")
    if not isinstance(ops, list) or not ops:
        return ProblemResponse(400, detail="the body must be a non-empty JSON array of operations")
    if len(ops) > MAX_OPERATIONS:
        return ProblemResponse(
            413, detail=f"{len(ops)} operations; at most {MAX_OPERATIONS} per request"
        )
    # No operation of a body within the 1 MiB limit of one operation can exceed it: the node
    # takes them parsed. A larger body goes as text, so each one's size is checked.
    parsed = len(body) <= MAX_EVENT_BYTES
    results = await run_in_threadpool(
        functools.partial(acts.apply, web(request), who, ops, parsed=parsed)
    )
    return JSONResponse(
        {"results": [_result_json(r, op) for r, op in zip(results, ops, strict=True)]}
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(row, default=str))  # type: ignore[no-any-return]


def _page_json(name: str, found: Listing) -> JSONResponse:
    next_page = found.page + 1 if found.more else None
    return JSONResponse(
        {name: [_jsonable(r) for r in found.rows], "page": found.page, "next_page": next_page}
    )


async def list_certificates(request: Request, who: Principal) -> Response:
    found = await listing(request, queries.certificates)
    return _page_json("certificates", found)


async def one_certificate(request: Request, who: Principal) -> Response:
    certificate_id = request.path_params["certificate_id"][:200]
    cert = await db(request, lambda cur: certificate_view(cur, certificate_id))
    if cert is None:
        return ProblemResponse(
            404, detail=f"certificate {certificate_id} is not known to this node"
        )
    cert["verify_url"] = web(request).verify_url(certificate_id)
    return JSONResponse(_jsonable(cert))


async def certificate_pdf(request: Request, who: Principal) -> Response:
    return await pdf_response(request, web(request), request.path_params["certificate_id"])


async def expected_shipments(request: Request, who: Principal) -> Response:
    found = await listing(
        request, lambda cur, q, page, size: queries.shipments(cur, q, page, size, True)
    )
    return _page_json("shipments", found)


async def openapi(request: Request) -> Response:
    return JSONResponse(document(web(request).code))


routes = [
    Route("/api/v1/operations", _guarded(operations, act=True), methods=["POST"]),
    Route("/api/v1/certificates", _guarded(list_certificates)),
    Route("/api/v1/certificates/{certificate_id}", _guarded(one_certificate)),
    Route("/api/v1/certificates/{certificate_id}/pdf", _guarded(certificate_pdf)),
    Route("/api/v1/shipments/expected", _guarded(expected_shipments)),
    Route("/api/v1/openapi.json", openapi),
]
