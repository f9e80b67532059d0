"""Is the region quiet? Outbox backlogs, queue depths and consumers, for drain and probes."""

from __future__ import annotations

import time
from typing import Any

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.adapters.rabbitmq import blocking_connection, translated
from exchange.app.runtime import Runtime
from exchange.errors import KpxError
from exchange.messaging import outbox
from exchange.registry import deadstore
from exchange.registry.deadletters import Status
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
        if q["name"] not in topology.DEAD_QUEUES and q.get("messages", 0)
    ]


def still_moving(rt: Runtime, admin: Admin) -> list[str]:
    """What is still moving; empty when the region is quiet."""
    busy = [f"outbox {name}: {n} unsent" for name, n in backlogs(rt).items() if n]
    return busy + busy_queues(admin.queues(rt.region.vhost))


def wait_drained(rt: Runtime, timeout: float) -> bool:
    """True once the region stays quiet for a statistics interval, False after ``timeout``."""
    return not drain(rt, timeout)


def drain(rt: Runtime, timeout: float) -> list[str]:
    """Wait until the region stays quiet for a statistics interval: ``[]`` then; after
    ``timeout``, what was still moving at the last look (for the operator)."""
    admin = rt.settings.admin()
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    moving: list[str] = []
    try:
        while time.monotonic() < deadline:
            moving = still_moving(rt, admin)
            if moving:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= _QUIET_FOR:
                return []
            time.sleep(0.5)
        return moving or [f"quiet for less than {_QUIET_FOR:.0f} s at the deadline"]
    finally:
        admin.close()


# kpx check warns from this share of the dead-letter limit on, as the alert does.
DEAD_WARN_SHARE = 0.8


def dead_letter_problems(queues: list[dict[str, Any]]) -> list[str]:
    """A dead-letter queue near its limit: past it, the broker refuses new dead letters."""
    return [
        f"queue {q['name']} holds {q.get('messages', 0):,} dead letters, "
        f"{q.get('messages', 0) / topology.DEAD_LIMIT:.0%} of its limit of "
        f"{topology.DEAD_LIMIT:,}: see `kpx registry dead-letters`"
        for q in queues
        if q["name"] in topology.DEAD_QUEUES
        and q.get("messages", 0) >= DEAD_WARN_SHARE * topology.DEAD_LIMIT
    ]


def dead_letter_summary(rt: Runtime) -> str:
    """One line for ``kpx check``: dead letters waiting in each queue (the bounded buffer the
    registry moves from) and those in the registry's store (listed and re-injected there)."""
    parts: list[str] = []
    admin = rt.settings.admin()
    try:
        depth = {q["name"]: int(q.get("messages", 0)) for q in admin.queues(rt.region.vhost)}
        parts += [f"{depth.get(q, 0):,} waiting in {q}" for q in topology.DEAD_QUEUES]
    except KpxError:
        parts.append("queues unknown")
    finally:
        admin.close()
    try:
        conn = postgres.connect(rt.registry_dsn, application_name="kpx-check")
        try:
            with postgres.transaction(conn) as cur:
                stored = deadstore.counts(cur)
        finally:
            conn.close()
        parts.append(
            f"{stored[Status.PENDING]:,} stored pending and "
            f"{stored[Status.REINJECTED]:,} re-injected (`kpx registry dead-letters`)"
        )
    except KpxError:
        parts.append("store unknown")
    return "dead letters: " + ", ".join(parts)


def amqp_problems(url: str, who: str, queue: str | None = None) -> list[str]:
    """Log in over AMQP as ``who`` (and see ``queue`` and its consumers): the management
    API answering says nothing about the broker port the services use."""
    try:
        conn = blocking_connection(url, name=f"kpx-check {who}")
    except KpxError as exc:
        return [f"broker login as {who}: {exc}"]
    try:
        if queue is None:
            return []
        with translated(f"declaring {queue}"):
            declared = conn.channel().queue_declare(queue, passive=True)
        if not declared.method.consumer_count:
            return [f"queue {queue} has no consumer"]
        return []
    except KpxError as exc:
        return [f"queue {queue}: {exc}"]
    finally:
        if conn.is_open:
            conn.close()


def probe_member(rt: Runtime, code: str) -> list[str]:
    """Problems of one node's own site, with its own credentials: its broker login, its
    inbox queue's consumer, its database (``kpx check --member XX``)."""
    user = topology.node_user(code, rt.region.vhost)
    problems = amqp_problems(rt.amqp_url(user), user, topology.node_queue(code))
    try:
        conn = postgres.connect(rt.node_dsn(code), application_name="kpx-check")
        try:
            outbox.backlog(conn)
        finally:
            conn.close()
    except KpxError as exc:
        problems.append(f"database: {exc}")
    return problems


def probe(rt: Runtime) -> list[str]:
    """Problems a health probe reports: broker, databases, queues without a consumer, a
    dead-letter queue near its limit."""
    problems: list[str] = []
    admin = rt.settings.admin()
    try:
        queues = admin.queues(rt.region.vhost)
        problems += [
            f"queue {q['name']} has no consumer"
            for q in queues
            if q["name"] not in topology.DEAD_QUEUES and not q.get("consumers", 0)
        ]
        problems += dead_letter_problems(queues)
    except KpxError as exc:
        problems.append(f"broker: {exc}")
    finally:
        admin.close()
    problems += amqp_problems(rt.amqp_url(None), "the administrator")
    try:
        backlogs(rt)
    except KpxError as exc:
        problems.append(f"database: {exc}")
    return problems
