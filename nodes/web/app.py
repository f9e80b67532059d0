"""The node's web app: the foundation (``exchange.web``) plus the node's pages and API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxWriter
from exchange.web.app import build_app
from exchange.web.security import WebSecurity
from nodes.operations import Node
from nodes.service import migrate
from nodes.web import (
    access,
    api,
    pages_certificates,
    pages_imports,
    pages_issue,
    pages_records,
    pages_session,
)
from nodes.web.access import session_secret
from nodes.web.context import NodeWeb
from nodes.web.db import Pool

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8400"
NAV = (
    ("/certificates", "Certificates"),
    ("/issue", "Issue"),
    ("/drafts", "Drafts"),
    ("/shipments", "Expected shipments"),
    ("/production", "Production"),
    ("/discrepancies", "Discrepancies"),
    ("/rejections", "Rejections"),
)
# A batch of operations for the API may be larger than one operation's 1 MiB; 10 MB is not.
SECURITY = WebSecurity(max_body_bytes=4 * 1024 * 1024)


def public_url(rt: Runtime) -> str:
    """The registry's public base URL (``[registry] public_url``, DESIGN §13)."""
    # The region file's key is parsed where the registry's web face is built; until a region
    # states it, the contract's default applies.
    url = getattr(rt.region, "public_url", None)
    return url if isinstance(url, str) and url else DEFAULT_PUBLIC_URL


def node_web(rt: Runtime, code: str, *, allow_self_authorise: bool = False) -> NodeWeb:
    """The node's context for the web app (migrates its database first)."""
    dsn = rt.node_dsn(code)
    migrate(dsn)
    node = Node(code, rt.region, OutboxWriter(rt.store, rt.signer(code)))
    return NodeWeb(code, rt.region, node, Pool(dsn), public_url(rt), allow_self_authorise)


def _session_check(nw: NodeWeb) -> Callable[[dict[str, Any]], Awaitable[bool]]:
    async def check(session: dict[str, Any]) -> bool:
        name, role, signed_at = (
            session.get("username"),
            session.get("role"),
            session.get("signed_at"),
        )
        if not isinstance(signed_at, int | float) or not isinstance(role, str):
            return False
        return await run_in_threadpool(
            nw.pool.run, lambda cur: access.session_valid(cur, str(name), role, signed_at)
        )

    return check


def create_app(nw: NodeWeb) -> Starlette:
    routes = [
        *pages_session.routes,
        *pages_certificates.routes,
        *pages_issue.routes,
        *pages_imports.routes,
        *pages_records.routes,
        *api.routes,
    ]
    settings = nw.region.node(nw.code)
    return build_app(
        routes,
        title=f"kpx · {settings.name}",
        secret=nw.pool.run(session_secret),
        packages=("nodes.web",),
        nav=NAV,
        security=SECURITY,
        state={"node_web": nw},
        session_check=_session_check(nw),
    )
