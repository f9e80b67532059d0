"""What the live view shows, read from the databases and the broker's management API.

Read-only: the registry's ``certificates``, ``import_confirmations``, ``event_log`` and
``dead_letters``, the reconciler's ``recon.discrepancies``, every outbox backlog, and the queue
depths. A dead letter counts while it waits in ``kpx.registry.dead`` or, once the registry has
moved it into its indexed store, while it is stored and not re-injected.
Errors: a query that fails (a service restarting its schema, the API briefly away) leaves the
previous figure in place; the view is advisory, the final report reads again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.errors import KpxError
from exchange.messaging import outbox
from exchange.wire import topology

_COUNTS = (
    "SELECT (SELECT count(*) FROM certificates),"
    " (SELECT count(*) FROM event_log WHERE decision = 'REJECTED'),"
    " (SELECT count(*) FROM import_confirmations),"
    " (SELECT count(*) FROM event_log),"
    " (SELECT count(*) FROM recon.discrepancies),"
    " (SELECT count(*) FROM dead_letters WHERE status = 'pending')"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts at one moment."""

    at: float
    accepted: int = 0
    rejected: int = 0
    confirmations: int = 0
    events: int = 0
    discrepancies: int = 0
    backlog: int = 0
    queued: int = 0
    dead: int = 0


class Monitor:
    """Keeps one read connection per database and polls them."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        dsns = [rt.registry_dsn, *(rt.node_dsn(c) for c in rt.region.node_codes)]
        self.conns = [postgres.connect(d, application_name="kpx-demo-monitor") for d in dsns]
        self.admin = rt.settings.admin()
        self.last = Snapshot(time.monotonic())
        self.queue_dead = 0  # the dead queue's depth last read (the API can be away)

    def read(self) -> Snapshot:
        """The current counts (the previous ones where a source did not answer)."""
        try:
            accepted, rejected, confirmations, events, found, stored_dead = self._registry_counts()
            backlog = sum(outbox.backlog(c) for c in self.conns)
        except KpxError:
            return self.last
        queued, dead = self._queues()
        self.last = Snapshot(
            time.monotonic(),
            accepted,
            rejected,
            confirmations,
            events,
            found,
            backlog,
            queued,
            dead + stored_dead,
        )
        return self.last

    def _registry_counts(self) -> tuple[int, int, int, int, int, int]:
        conn = self.conns[0]
        with postgres.translated("reading the demo's counts"), conn.cursor() as cur:
            cur.execute(_COUNTS)
            row = cur.fetchone()
        conn.commit()
        assert row is not None
        a, r, c, e, d, dead = (int(n) for n in row)
        return a, r, c, e, d, dead

    def _queues(self) -> tuple[int, int]:
        try:
            queues = self.admin.queues(self.rt.region.vhost)
        except KpxError:
            return self.last.queued, self.queue_dead
        dead = sum(int(q.get("messages", 0)) for q in queues if q["name"] == topology.DEAD_QUEUE)
        total = sum(int(q.get("messages", 0)) for q in queues)
        self.queue_dead = dead
        return total - dead, dead

    def close(self) -> None:
        """Close every connection."""
        for conn in self.conns:
            conn.close()
        self.admin.close()
