"""Applying operations for a person or a national system: the node's rules, plus the audit.

Pages and API alike come through :func:`apply`: the operations go to ``Node.submit`` (the
same code as ``kpx node submit``), and the audit rows are written inside the same
transaction, so an act and its record commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from exchange.adapters.postgres import Cursor
from nodes.operations import Result
from nodes.web import access
from nodes.web.access import Principal
from nodes.web.context import NodeWeb

After = Callable[[Cursor, list[Result]], None]


def line_of(op: Any) -> str:
    """One operation as the JSON line ``Node.submit`` reads (numbers kept exact)."""
    return json.dumps(op, default=str, ensure_ascii=False)


def apply(
    nw: NodeWeb,
    who: Principal,
    ops: Sequence[Any],
    *,
    after: After | None = None,
    parsed: bool = False,
) -> list[Result]:
    """Apply ``ops`` (parsed JSON values) as ``who``; one Result per operation, in order.

    ``parsed``: the operations come straight from ``json.loads(parse_float=Decimal)`` of a
    body no longer than one operation may be, so the node need not see them as text again.
    """
    lines: list[Any] = list(ops) if parsed else [line_of(op) for op in ops]

    def record(cur: Cursor, results: list[Result]) -> None:
        access.audit_many(cur, [_audit_row(who, op, r) for op, r in zip(ops, results, strict=True)])
        if after is not None:
            after(cur, results)

    with nw.pool.connection() as conn:
        return list(nw.node.submit(conn, lines, record=record))


def _audit_row(who: Principal, op: Any, result: Result) -> tuple[Principal, str, str, str]:
    kind = str(op.get("op", "?"))[:40] if isinstance(op, Mapping) else "?"
    rid = op.get("request_id") if isinstance(op, Mapping) else None
    detail = f"request_id {rid}" if isinstance(rid, str) else ""
    if result.ok:
        action = f"{kind} (already applied)" if result.already else kind
        return who, action, result.subject, detail
    subject = op.get("certificate_id") if isinstance(op, Mapping) else None
    subject = subject if isinstance(subject, str) else ""
    return who, f"{kind} refused", subject[:200], f"{result.code} {result.sentence}"[:2000]
