"""Is the region quiet? Outbox backlogs, queue depths and consumers, for drain and probes."""

from __future__ import annotations

import time
from typing import Any

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app.runtime import Runtime
from exchange.errors import KpxError
from exchange.messaging import outbox
from exchange.wire import topology

# The management API refreshes queue statistics every 5 s (collect_statistics_interval): a
# region counts as drained only when it stayed quiet for longer than that.
_QUIET_FOR = 6.0


def backlogs(rt: Runtime) -> dict[str, int]:
    """Unconfirmed outbox rows per database (registry and every node)."""
    dsns = {"registry": rt.registry_dsn} | {c: rt.node_dsn(c) for c in rt.region.node_codes}
    counts: dict[str, int] = {}
    for name, dsn in dsns.items():
        conn = postgres.connect(dsn, application_name="kpx-drain")
        try:
            counts[name] = outbox.backlog(conn)
        finally:
            conn.close()
    return counts


def busy_queues(queues: list[dict[str, Any]]) -> list[str]:
    """Queues (except the dead-letter queue) holding ready or unacknowledged messages."""
    return [
        f"{q['name']}: {q.get('messages', 0)} messages"
        for q in queues
        if q["name"] != topology.DEAD_QUEUE and q.get("messages", 0)
    ]


def still_moving(rt: Runtime, admin: Admin) -> list[str]:
    """What is still moving; empty when the region is quiet."""
    busy = [f"outbox {name}: {n} unsent" for name, n in backlogs(rt).items() if n]
    return busy + busy_queues(admin.queues(rt.region.vhost))


def wait_drained(rt: Runtime, timeout: float) -> bool:
    """True once the region stays quiet for a statistics interval, False after ``timeout``."""
    admin = Admin(rt.settings.amqp_url, rt.settings.management_url)
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    try:
        while time.monotonic() < deadline:
            if still_moving(rt, admin):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= _QUIET_FOR:
                return True
            time.sleep(0.5)
        return False
    finally:
        admin.close()


def probe(rt: Runtime) -> list[str]:
    """Problems a health probe reports: broker, databases, queues without a consumer."""
    problems: list[str] = []
    admin = Admin(rt.settings.amqp_url, rt.settings.management_url)
    try:
        queues = admin.queues(rt.region.vhost)
        problems += [
            f"queue {q['name']} has no consumer"
            for q in queues
            if q["name"] != topology.DEAD_QUEUE and not q.get("consumers", 0)
        ]
    except KpxError as exc:
        problems.append(f"broker: {exc}")
    finally:
        admin.close()
    try:
        backlogs(rt)
    except KpxError as exc:
        problems.append(f"database: {exc}")
    return problems
