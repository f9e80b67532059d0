"""What every page of ``kpx registry serve`` shares: region, pools, templates, limits.

Built once at start by :func:`exchange.registry.web.app.build`. Bounded sets of connections,
all apart from ingest's own: ``lookups`` (verification, non-blocking, read-only, short
statement timeout), ``public`` (the keys and the log, read-only) and ``work`` (statistics and
the console). Pages render through the foundation's templates
(exchange/web/templating.py), which translate and autoescape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from exchange.adapters.postgres import fetch_all
from exchange.domain.kpstats import Period, Report
from exchange.domain.region import Region
from exchange.reconciler import aggregation
from exchange.registry.web.limits import RateLimit
from exchange.registry.web.lookups import Lookups
from exchange.registry.web.reads import PublicPool
from exchange.web import templating
from exchange.wire.codec import SchemaStore
from exchange.wire.signing import Signer

T = TypeVar("T")
STATS_TTL = 2.0  # seconds a computed report is served before the figures are read again


@dataclass
class Limits:
    """Requests per second (and burst) per client."""

    verify_rate: float = 10.0
    verify_burst: float = 30.0


@dataclass
class Portal:
    """The server's shared state."""

    region: Region
    schemas: SchemaStore
    signer: Callable[[], Signer]
    amqp_url: Callable[[], str]
    broker_user: str
    lookups: Lookups
    public: PublicPool
    work: PublicPool
    limits: Limits = field(default_factory=Limits)
    today: Callable[[], date] = field(default=lambda: datetime.now(UTC).date())
    verify_limit: RateLimit = field(init=False)
    _reports: dict[str, tuple[float, Report]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.verify_limit = RateLimit(self.limits.verify_rate, self.limits.verify_burst)

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        """A page of the portal in the request's language."""
        values = {"region": self.region, "user": None, **context}
        return templating.render(request, name, values, status)

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` on a work connection, in a worker thread (never the loop)."""

        def call() -> T:
            with self.work.connection() as conn:
                return fn(conn, *args)

        return await run_in_threadpool(call)

    def report(self, period: Period) -> Report:
        """The period's statistics exactly as ``kpx stats`` computes and versions them."""
        with self._lock:
            cached = self._reports.get(period.name)
            if cached and time.monotonic() - cached[0] < STATS_TTL:
                return cached[1]
        with self.work.connection() as conn:
            report = aggregation.publish(
                conn, period, self.region.code, list(self.region.node_codes)
            )
        with self._lock:
            self._reports[period.name] = (time.monotonic(), report)
        return report

    def history(self, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The latest stored version's rows of each named period that has one."""
        with self.work.connection() as conn:
            rows = fetch_all(
                conn,
                "SELECT DISTINCT ON (period) period, figures FROM recon.statistics_versions"
                " WHERE period = ANY(%s) ORDER BY period, version DESC",
                (names,),
            )
        return {r["period"]: r["figures"] for r in rows}

    def versions(self, period: str) -> list[dict[str, Any]]:
        """Every stored version of a period, newest first."""
        with self.work.connection() as conn:
            return fetch_all(
                conn,
                "SELECT version, generated_at FROM recon.statistics_versions WHERE period = %s"
                " ORDER BY version DESC",
                (period,),
            )
