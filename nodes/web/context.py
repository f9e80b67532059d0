"""What every page and API handler of the node app shares: the node, its database, who asks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from exchange.adapters.postgres import Cursor
from exchange.domain.region import Region
from exchange.web.forms import client_address
from nodes.operations import Node
from nodes.web.access import Principal
from nodes.web.db import Pool

T = TypeVar("T")
PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class NodeWeb:
    """One node's web app: its code, region, operations, database and settings."""

    code: str
    region: Region
    node: Node
    pool: Pool
    public_url: str  # the registry's public base URL, printed in QR codes
    allow_self_authorise: bool = False  # four eyes unless the member chose otherwise

    @property
    def authority(self) -> str:
        return self.region.node(self.code).authority

    def verify_url(self, certificate_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/verify/{quote(certificate_id, safe='')}"


def web(request: Request) -> NodeWeb:
    node_web: NodeWeb = request.app.state.node_web
    return node_web


async def db(request: Request, work: Callable[[Cursor], T]) -> T:
    """Run ``work(cur)`` in one transaction on a worker thread."""
    return await run_in_threadpool(web(request).pool.run, work)


def signed_in(request: Request) -> Principal | None:
    session = request.scope["session"]
    name, role = session.get("username"), session.get("role")
    if not isinstance(name, str) or not isinstance(role, str):
        return None
    return Principal(
        "user", name, role, str(session.get("full_name", name)), client_address(request)
    )


def require(request: Request, *, act: bool = False, draft: bool = False) -> Principal:
    """The signed-in user; a redirect to the sign-in page, or 403 for a role that may not."""
    who = signed_in(request)
    if who is None:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise HTTPException(303, "sign in first", headers={"Location": f"/login?next={target}"})
    if (act and not who.can_act) or (draft and not who.can_draft):
        t = request.state.translator.gettext
        raise HTTPException(403, t("Your role may not do this."))
    return who


Search = Callable[[Cursor, str, int, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class Listing:
    """One page of a searchable list: what was searched, the page, its rows, if more follow."""

    q: str
    page: int
    rows: list[dict[str, Any]]
    more: bool

    def context(self) -> dict[str, Any]:
        """The template variables every list page reads."""
        return {"rows": self.rows, "q": self.q, "page": self.page, "more": self.more}


async def listing(request: Request, search: Search) -> Listing:
    """Run ``search(cur, q, page, PAGE_SIZE)`` for the request's ``q`` (at most 100 characters)
    and ``page``; ``search`` returns one row more than a page when more follow."""
    q = request.query_params.get("q", "")[:100]
    page = page_number(request)
    rows = await db(request, lambda cur: search(cur, q, page, PAGE_SIZE))
    return Listing(q, page, rows[:PAGE_SIZE], len(rows) > PAGE_SIZE)


def page_number(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("page", "1")), 100_000))
    except ValueError:
        return 1
