"""Certificates: the list with the registry's answer, one certificate with its audit trail,
voiding and replacing it, and the printable PDF."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.adapters.postgres import Cursor
from exchange.web.forms import checked_form
from exchange.web.templating import render
from nodes.web import access, acts, pdf, queries
from nodes.web.context import NodeWeb, db, listing, require, web
from nodes.web.reasons import explain


async def list_page(request: Request) -> Response:
    require(request)
    found = await listing(request, queries.certificates)
    return render(request, "certificates.html", found.context())


def certificate_view(cur: Cursor, certificate_id: str) -> dict[str, Any] | None:
    """A certificate with who authorised it and every recorded act about it."""
    cert = queries.certificate(cur, certificate_id)
    if cert is None:
        return None
    cur.execute(
        "SELECT 'draft:' || draft_id FROM drafts WHERE certificate_id = %s", (certificate_id,)
    )
    subjects = [certificate_id, *(str(r[0]) for r in cur.fetchall())]
    cert["trail"] = access.audit_trail(cur, subjects)
    cert["authorised"] = queries.authorisation(cur, certificate_id)
    return cert


async def certificate_page(
    request: Request, refusal: dict[str, str] | None = None, status: int = 200
) -> Response:
    who = require(request)
    certificate_id = request.path_params["certificate_id"][:200]
    cert = await db(request, lambda cur: certificate_view(cur, certificate_id))
    if cert is None:
        raise HTTPException(404, f"certificate {certificate_id} is not known to this node")
    return render(
        request,
        "certificate.html",
        {
            "c": cert,
            "body": cert["body"],
            "can_act": who.can_act,
            "refusal": refusal,
            "verify_url": web(request).verify_url(certificate_id),
        },
        status=status,
    )


async def void_post(request: Request) -> Response:
    who = require(request, act=True)
    form = await checked_form(request)
    certificate_id = request.path_params["certificate_id"][:200]
    op: dict[str, Any] = {
        "op": "void",
        "certificate_id": certificate_id,
        "reason": str(form.get("reason", ""))[:100_000].strip(),
    }
    replaced_by = str(form.get("replaced_by", "")).strip()[:200]
    if replaced_by:
        op["replaced_by"] = replaced_by
    [result] = await run_in_threadpool(acts.apply, web(request), who, [op])
    if result.ok:
        return RedirectResponse(f"/certificates/{certificate_id}", status_code=303)
    shown = explain(request.state.translator.gettext, result.code, result.sentence)
    return await certificate_page(request, refusal=shown, status=422)


async def pdf_page(request: Request) -> Response:
    require(request)
    return await pdf_response(request, web(request), request.path_params["certificate_id"])


async def pdf_response(request: Request, nw: NodeWeb, certificate_id: str) -> Response:
    cert = await db(request, lambda cur: certificate_view(cur, certificate_id[:200]))
    if cert is None:
        raise HTTPException(404, f"certificate {certificate_id} is not known to this node")
    document = await run_in_threadpool(pdf.render_certificate, cert, nw)
    name = certificate_id.replace('"', "")
    return Response(
        document,
        media_type="application/pdf",
        headers={"content-disposition": f'inline; filename="{name}.pdf"'},
    )


routes = [
    Route("/certificates", list_page),
    Route("/certificates/{certificate_id}", certificate_page),
    Route("/certificates/{certificate_id}/void", void_post, methods=["POST"]),
    Route("/certificates/{certificate_id}/pdf", pdf_page),
]
