"""Issuing: the certificate form (parcels added and removed, totals shown), drafts, and an
officer's authorisation — the Annex I "validation by the exporting authority".

A draft is checked by the node's own rules when it is saved and again when it is authorised
(``Node.submit`` then applies it under ``request_id`` ``draft-<n>``, so a double click or a
second officer can never issue it twice). Four eyes: whoever drafted may not authorise the
same draft unless the member's settings allow it.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.adapters.postgres import Cursor
from exchange.errors import Refusal
from exchange.web.forms import checked_form
from exchange.web.templating import render
from nodes.operations import Result
from nodes.web import access, acts, issue_form, queries
from nodes.web.access import Principal
from nodes.web.context import PAGE_SIZE, db, page_number, require, web
from nodes.web.reasons import explain


def _show_form(
    request: Request,
    values: dict[str, str],
    errors: dict[str, dict[str, str]] | None = None,
    general: dict[str, str] | None = None,
    status: int = 200,
    replaces: str = "",
) -> Response:
    who = require(request, draft=True)
    return render(
        request,
        "issue.html",
        {
            "values": values,
            "errors": errors or {},
            "general": general,
            "count": issue_form.parcel_count(values),
            "totals": issue_form.totals(values),
            "hs_codes": issue_form.HS_CODES,
            "can_issue": who.can_act and web(request).allow_self_authorise,
            "replaces": replaces,
        },
        status=status,
    )


async def issue_page(request: Request) -> Response:
    """The empty form, or (``?from=<id>``) one filled from a certificate it will replace."""
    require(request, draft=True)
    nw = web(request)
    source = request.query_params.get("from", "")[:200]
    if source:
        found = await db(request, lambda cur: queries.certificate(cur, source))
        if found is None:
            raise HTTPException(404, f"certificate {source} is not known to this node")
        values = issue_form.values_from(found["body"], nw.node.today())
        return _show_form(request, values, replaces=source)
    return _show_form(request, issue_form.blank(nw.code, nw.node.today()))


async def issue_post(request: Request) -> Response:
    who = require(request, draft=True)
    nw = web(request)
    values = issue_form.values_of(await checked_form(request))
    action = values.pop("action", "update")
    values.pop("csrf_token", None)
    if action == "add":
        return _show_form(request, issue_form.add_parcel(values, nw.code))
    if action.startswith("remove:") and action[7:].isdigit():
        return _show_form(request, issue_form.remove_parcel(values, int(action[7:])))
    if action not in ("draft", "issue"):
        return _show_form(request, values)
    operation = {"op": "issue", "certificate": issue_form.certificate_of(values)}
    try:
        draft_id = await db(request, lambda cur: _save_draft(cur, request, who, operation))
    except Refusal as refusal:
        return _refused_form(request, values, refusal.code, refusal.sentence)
    if action == "issue" and who.can_act and nw.allow_self_authorise:
        return await _authorise(request, who, draft_id)
    return RedirectResponse(f"/drafts/{draft_id}", status_code=303)


def _save_draft(cur: Cursor, request: Request, who: Principal, operation: dict[str, Any]) -> int:
    web(request).node.check_issue(cur, operation["certificate"])  # raises Refusal
    draft_id = queries.save_draft(cur, operation, who.name)
    access.audit(cur, who, "draft", f"draft:{draft_id}")
    return draft_id


def _refused_form(request: Request, values: dict[str, str], code: str, sentence: str) -> Response:
    shown = explain(request.state.translator.gettext, code, sentence)
    field = issue_form.field_of(sentence, issue_form.form_fields(values))
    if field is None:
        return _show_form(request, values, general=shown, status=422)
    return _show_form(request, values, errors={field: shown}, status=422)


async def drafts_page(request: Request) -> Response:
    require(request)
    page = page_number(request)
    everything = request.query_params.get("all") == "1"
    rows = await db(request, lambda cur: queries.drafts(cur, page, PAGE_SIZE, not everything))
    return render(
        request,
        "drafts.html",
        {
            "rows": rows[:PAGE_SIZE],
            "page": page,
            "more": len(rows) > PAGE_SIZE,
            "everything": everything,
        },
    )


async def draft_page(request: Request) -> Response:
    who = require(request)
    draft_id = _draft_id(request)
    found = await db(request, lambda cur: _draft_and_trail(cur, draft_id))
    if found is None:
        raise HTTPException(404, f"draft {draft_id} does not exist")
    draft, trail = found
    nw = web(request)
    may = who.can_act and (draft["drafted_by"] != who.name or nw.allow_self_authorise)
    return render(
        request,
        "draft.html",
        {
            "draft": draft,
            "cert": draft["operation"]["certificate"],
            "trail": trail,
            "may_authorise": may and draft["state"] == "DRAFT",
            "four_eyes": who.can_act and draft["drafted_by"] == who.name and not may,
            "refusal": None,
        },
    )


def _draft_and_trail(cur: Cursor, draft_id: int) -> tuple[dict[str, Any], list[Any]] | None:
    draft = queries.draft(cur, draft_id)
    if draft is None:
        return None
    return draft, access.audit_trail(cur, [f"draft:{draft_id}"])


def _draft_id(request: Request) -> int:
    text = request.path_params["draft_id"]
    if not text.isdigit() or len(text) > 18:
        raise HTTPException(404, "no such draft")
    return int(text)


async def authorise_post(request: Request) -> Response:
    who = require(request, act=True)
    await checked_form(request)
    return await _authorise(request, who, _draft_id(request))


async def _authorise(request: Request, who: Principal, draft_id: int) -> Response:
    nw = web(request)
    draft = await db(request, lambda cur: queries.draft(cur, draft_id))
    if draft is None:
        raise HTTPException(404, f"draft {draft_id} does not exist")
    if draft["state"] == "AUTHORISED":
        return RedirectResponse(f"/certificates/{draft['certificate_id']}", status_code=303)
    _check_authorisable(request, who, draft, allow_self=nw.allow_self_authorise)
    # request_id draft-<n>: a double click or a second officer never issues it twice
    operation = dict(draft["operation"], request_id=f"draft-{draft_id}")
    after = _record_authorisation(who, draft_id)
    [result] = await run_in_threadpool(acts.apply, nw, who, [operation], after=after)
    if result.ok:
        return RedirectResponse(f"/certificates/{result.subject}", status_code=303)
    return await _refused(request, draft, draft_id, result)


def _check_authorisable(
    request: Request, who: Principal, draft: dict[str, Any], *, allow_self: bool
) -> None:
    """HTTPException 409 when the draft was discarded, 403 when four eyes forbid ``who``."""
    if draft["state"] != "DRAFT":
        raise HTTPException(409, request.state.translator.gettext("This draft was discarded."))
    if draft["drafted_by"] == who.name and not allow_self:
        raise HTTPException(
            403,
            request.state.translator.gettext(
                "Four eyes: another officer must authorise a draft you prepared."
            ),
        )


def _record_authorisation(who: Principal, draft_id: int) -> acts.After:
    """The step that marks the draft and audits both ways, in the transaction that issues it."""

    def after(cur: Cursor, results: list[Result]) -> None:
        if results[0].ok:
            queries.mark_authorised(cur, draft_id, who.name, results[0].subject)
            access.audit(cur, who, "authorise", f"draft:{draft_id}", results[0].subject)
            access.audit(cur, who, "authorise", results[0].subject, f"draft:{draft_id}")

    return after


async def _refused(
    request: Request, draft: dict[str, Any], draft_id: int, result: Result
) -> Response:
    """The draft page again, 422, with the node's refusal explained."""
    trail = await db(request, lambda cur: access.audit_trail(cur, [f"draft:{draft_id}"]))
    refusal = explain(request.state.translator.gettext, result.code, result.sentence)
    return render(
        request,
        "draft.html",
        {
            "draft": draft,
            "cert": draft["operation"]["certificate"],
            "trail": trail,
            "may_authorise": True,
            "four_eyes": False,
            "refusal": refusal,
        },
        status=422,
    )


async def discard_post(request: Request) -> Response:
    who = require(request, draft=True)
    await checked_form(request)
    draft_id = _draft_id(request)

    def discard(cur: Cursor) -> None:
        if queries.discard_draft(cur, draft_id):
            access.audit(cur, who, "discard", f"draft:{draft_id}")

    await db(request, discard)
    return RedirectResponse("/drafts", status_code=303)


routes = [
    Route("/issue", issue_page, methods=["GET"]),
    Route("/issue", issue_post, methods=["POST"]),
    Route("/drafts", drafts_page),
    Route("/drafts/{draft_id}", draft_page),
    Route("/drafts/{draft_id}/authorise", authorise_post, methods=["POST"]),
    Route("/drafts/{draft_id}/discard", discard_post, methods=["POST"]),
]
