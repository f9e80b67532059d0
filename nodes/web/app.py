"""The node's web app: the foundation (``exchange.web``) plus the node's pages and API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from exchange.web.app import build_app
from exchange.web.security import WebSecurity
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
