"""Prometheus metrics of every kpx service, and the /metrics + /healthz endpoint.

Metrics observe; they never steer. Labels are bounded: participant codes, event types,
reason codes, discrepancy kinds and outcomes — never certificate numbers or event ids.
The names are listed in docs/architecture.md; the alert rules and the dashboard rely on them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from exchange.errors import ConfigError

log = logging.getLogger(__name__)

# Where /metrics and /healthz listen: loopback unless the settings open them to a scrape
# network (KPX_METRICS_HOST, set once by the composition root through listen_on).
_BIND = ["127.0.0.1"]


def listen_on(host: str) -> None:
    """The address every later :func:`serve` binds (default 127.0.0.1)."""
    _BIND[0] = host


# Publish confirms on a local broker take about a millisecond; across a region, tens.
_CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# End to end (committed at a node -> committed at the registry) includes batching and, after
# an outage, the backlog: up to minutes.
_E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

OUTBOX_PUBLISHED = Counter(
    "kpx_outbox_published_total", "Events handed to the broker.", ["producer"]
)
OUTBOX_CONFIRMED = Counter(
    "kpx_outbox_confirmed_total", "Events the broker confirmed.", ["producer"]
)
OUTBOX_RETURNED = Counter(
    "kpx_outbox_returned_total", "Events the broker returned as unroutable.", ["producer"]
)
OUTBOX_NACKED = Counter(
    "kpx_outbox_nacked_total", "Events the broker refused (nack).", ["producer"]
)
OUTBOX_BACKLOG = Gauge(
    "kpx_outbox_backlog_events", "Events committed but not yet confirmed.", ["producer"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "kpx_outbox_oldest_age_seconds", "Age of the oldest unconfirmed outbox event.", ["producer"]
)
PUBLISH_CONFIRM = Histogram(
    "kpx_publish_confirm_seconds",
    "Time from publish to the broker's confirm, per batch.",
    ["producer"],
    buckets=_CONFIRM_BUCKETS,
)
# One consumed batch, from when it closed to its commit (decode, record, commit): the
# service's share of the end-to-end latency, beside the batch's size.
CONSUMER_BATCH = Histogram(
    "kpx_consumer_batch_seconds",
    "Time to decode, record and commit one consumed batch.",
    ["service"],
    buckets=_CONFIRM_BUCKETS,
)
CONSUMER_BATCH_MESSAGES = Histogram(
    "kpx_consumer_batch_messages",
    "Messages in one consumed batch.",
    ["service"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
BROKER_CONNECTED = Gauge("kpx_broker_connected", "1 while connected to the broker.", ["service"])
BROKER_BLOCKED = Gauge("kpx_broker_blocked", "1 while the broker blocks publishing.", ["service"])
EVENTS_CONSUMED = Counter(
    "kpx_events_consumed_total", "Events consumed, by outcome.", ["service", "producer", "outcome"]
)
EVENTS_REJECTED = Counter(
    "kpx_events_rejected_total", "Events the registry rejected.", ["producer", "reason"]
)
DEAD_LETTERS = Counter(
    "kpx_dead_letters_total", "Messages set aside as unreadable.", ["service", "reason"]
)
# Moved out of kpx.registry.dead into the store, dead letters no longer show as a queue depth:
# this gauge is what says they still wait for an operator's decision.
DEAD_LETTERS_PENDING = Gauge(
    "kpx_dead_letters_pending",
    "Dead letters stored and not re-injected, by the queue they failed in.",
    ["queue"],
)
END_TO_END = Histogram(
    "kpx_end_to_end_seconds",
    "From the producer's commit to the registry's commit.",
    ["producer"],
    buckets=_E2E_BUCKETS,
)
CERTIFICATES_ACCEPTED = Counter(
    "kpx_certificates_accepted_total", "Certificates the registry accepted.", ["participant"]
)
CARATS_ACCEPTED = Counter(
    "kpx_carats_accepted_total", "Carats on certificates the registry accepted.", ["participant"]
)
USD_ACCEPTED = Counter(
    "kpx_usd_accepted_total", "US dollars on certificates the registry accepted.", ["participant"]
)
IMPORT_CONFIRMATIONS = Counter(
    "kpx_import_confirmations_total", "Import confirmations the registry accepted.", ["participant"]
)
SEQUENCE_GAPS_OPEN = Gauge("kpx_sequence_gaps_open", "Sequence gaps not yet filled.", ["producer"])
SEQUENCE_GAPS = Counter("kpx_sequence_gaps_total", "Sequence gaps detected.", ["producer"])
DISCREPANCIES_RAISED = Counter("kpx_discrepancies_raised_total", "Discrepancies raised.", ["kind"])
DISCREPANCIES_OPEN = Gauge("kpx_discrepancies_open", "Discrepancies not yet resolved.", ["kind"])
INBOX_RECEIVED = Counter(
    "kpx_inbox_received_total", "Messages a node received.", ["member", "event_type"]
)
RECONCILER_EVENTS = Counter(
    "kpx_reconciler_events_total", "Accepted events reconciled.", ["event_type"]
)
RECONCILE_DURATION = Histogram(
    "kpx_reconcile_duration_seconds",
    "Duration of a reconcile --as-of run.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry = REGISTRY
    health: Callable[[], tuple[bool, str]] = staticmethod(lambda: (True, "ok"))

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body, status, ctype = generate_latest(self.registry), 200, CONTENT_TYPE_LATEST
        elif self.path.startswith("/healthz"):
            ok, text = type(self).health()
            body, status, ctype = text.encode(), 200 if ok else 503, "text/plain"
        else:
            body, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: " + format, *args)


def serve(
    port: int, health: Callable[[], tuple[bool, str]], host: str | None = None
) -> ThreadingHTTPServer:
    """Serve /metrics and /healthz on ``port`` from a daemon thread; returns the server.

    ``host`` defaults to the address of :func:`listen_on` (loopback unless opened).
    """
    host = _BIND[0] if host is None else host
    handler = type("Handler", (_Handler,), {"health": staticmethod(health)})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:  # a taken port: one clear line, not a traceback
        raise ConfigError(f"metrics port {port} on {host}: {exc.strerror or exc}") from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
