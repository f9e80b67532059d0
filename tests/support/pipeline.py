"""The whole pipeline under load, for fault tests: services as processes, a load, a checker.

- :class:`Service` is one ``kpx … run`` child process in its own process group: start, SIGKILL,
  SIGSTOP/SIGCONT, SIGTERM; its output goes to a log file.
- :class:`Load` keeps two members issuing certificates (BW → AE, ZA → BW) and the destinations
  confirming the shipments the registry announced to them, through the nodes' own operations
  (``nodes.operations.Node``, what ``kpx node submit`` runs), at a modest rate, in a thread.
  Every tenth confirmation by AE reports a broken seal: a discrepancy the reconciler must
  raise exactly once, so that "none lost" is tested and not only "none invented". A database
  that goes away is waited for, never a reason to stop: the nodes' databases are the truth.
- :func:`check` compares every database of the region, after the pipeline drained: what the
  nodes produced against what the registry recorded, decided, announced and republished, what
  the reconciler projected and raised, and what reached the nodes back; and the registry's
  log must verify (``kpx registry log verify``). It returns the
  events, what was lost and what took effect twice, with one sentence per problem.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2

from exchange.adapters.postgres import Connection, connect, fetch_all
from exchange.app.runtime import Runtime
from exchange.domain.events import AcceptedBatch, each_event
from exchange.errors import KpxError
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import log as registry_log
from exchange.registry import logcheck
from exchange.tlog import checkpoint
from exchange.wire.codec import default_store
from exchange.wire.envelope import read_verified
from nodes.operations import Node

log = logging.getLogger(__name__)

ROUTES = (("BW", "AE"), ("ZA", "BW"))  # issuer -> destination
NODES = ("BW", "ZA", "AE")
BROKEN_SEAL_EVERY = 10  # of AE's confirmations


class Service:
    """One long-running ``kpx`` child process (its own process group)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def signal(self, signum: int) -> None:
        if self.proc is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None when it was killed)."""
        if not self.alive:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGCONT)  # a paused service cannot drain
        self.signal(signal.SIGTERM)
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
        return f"== {self.name} ({self.log_path})\n" + "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- load


def issue_line(issuer: str, destination: str, day: datetime) -> str:
    """An ``issue`` operation of ``issuer`` for ``destination`` (numbered by the node)."""
    return json.dumps({"op": "issue", "certificate": {
        "destination": destination,
        "origin": {"type": "UNMIXED", "countries": [issuer]},
        "exporter": {"name": f"{issuer} Diamond Company", "address": "1 Mine Road",
                     "country": issuer, "licence_no": f"{issuer}-EX-1"},
        "importer": {"name": f"{destination} Trader", "address": "2 Bourse Street",
                     "country": destination, "licence_no": f"{destination}-IM-1"},
        "date_of_issue": day.date().isoformat(),
        "date_of_expiry": (day + timedelta(days=30)).date().isoformat(),
        "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "1000.50",
                     "value_usd": "192000.00", "origin_country": issuer}],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }})  # fmt: skip


def confirm_line(certificate_id: str, issuer: str, body: dict[str, Any], intact: bool) -> str:
    """A ``confirm_import`` of an announced shipment, with the certificate's own figures."""
    received = datetime.fromisoformat(body["date_of_issue"]) + timedelta(days=2)
    return json.dumps({
        "op": "confirm_import", "certificate_id": certificate_id, "issuing_participant": issuer,
        "received_on": received.date().isoformat(), "parcels": body["number_of_parcels"],
        "carats": body["total_carats"], "value_usd": body["total_value_usd"],
        "seal_intact": intact, "remarks": "",
    })  # fmt: skip


class Load:
    """Issues and confirms across the nodes in a thread until :meth:`stop`."""

    def __init__(self, rt: Runtime, per_round: int = 3, pause: float = 0.25) -> None:
        self.rt, self.per_round, self.pause = rt, per_round, pause
        self.nodes = {c: Node(c, rt.region, OutboxWriter(rt.store, rt.signer(c))) for c in NODES}
        self._conns: dict[str, Connection] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.confirmed = 0
        self.outages = 0  # operations that met a database going away (retried)
        self.refused: list[str] = []

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the load generator did not stop within 60 s"
        for conn in self._conns.values():
            with suppress(Exception):
                conn.close()
        self._conns.clear()

    def burst(self, issuer: str, destination: str, count: int) -> None:
        """Issue ``count`` certificates at once (a backlog), beside the load's own thread."""
        node = Node(issuer, self.rt.region, OutboxWriter(self.rt.store, self.rt.signer(issuer)))
        lines = [issue_line(issuer, destination, datetime.now(UTC)) for _ in range(count)]
        conn = connect(self.rt.node_dsn(issuer), application_name="burst")
        try:
            results = list(node.submit(conn, lines))
        finally:
            conn.close()
        self.refused += [f"{issuer} {r}" for r in results if not r.ok]

    def _run(self) -> None:
        while not self._stop.is_set():
            for issuer, destination in ROUTES:
                day = datetime.now(UTC)
                self._submit(issuer, [issue_line(issuer, destination, day)] * self.per_round)
            for code in {d for _, d in ROUTES}:
                self._confirm(code)
            self._stop.wait(self.pause)

    def _confirm(self, code: str) -> None:
        try:
            rows = fetch_all(self._conn(code),
                             "SELECT certificate_id, issuing_participant, body FROM "
                             "expected_shipments WHERE NOT confirmed ORDER BY accepted_at "
                             "LIMIT 50")  # fmt: skip
        except (KpxError, psycopg2.Error) as exc:
            self._outage(code, exc)
            return
        lines = []
        for row in rows:
            self.confirmed += code == "AE"
            intact = code != "AE" or self.confirmed % BROKEN_SEAL_EVERY != 0
            lines.append(confirm_line(row["certificate_id"], row["issuing_participant"],
                                      row["body"], intact))  # fmt: skip
        if lines:
            self._submit(code, lines)

    def _submit(self, code: str, lines: Sequence[str]) -> bool:
        try:
            results = list(self.nodes[code].submit(self._conn(code), lines))
        except (KpxError, psycopg2.Error) as exc:
            self._outage(code, exc)
            return False
        self.refused += [f"{code} {r}" for r in results if not r.ok]
        return True

    def _conn(self, code: str) -> Connection:
        conn = self._conns.get(code)
        if conn is None or conn.closed:
            conn = self._conns[code] = connect(self.rt.node_dsn(code), application_name="load")
        return conn

    def _outage(self, code: str, exc: Exception) -> None:
        self.outages += 1
        log.info("load: %s unavailable (%s); retrying", code, exc)
        conn = self._conns.pop(code, None)
        if conn is not None:
            with suppress(Exception):
                conn.close()
        self._stop.wait(0.5)


# --------------------------------------------------------------------------- checker


def query(dsn: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    conn = connect(dsn, application_name="checker")
    try:
        return fetch_all(conn, sql, params)
    finally:
        conn.close()


def node_counts(rt: Runtime) -> dict[str, int]:
    """Per node: events produced, and those the registry has not answered yet."""
    out = {"events": 0, "undecided": 0}
    for code in NODES:
        row = query(rt.node_dsn(code), "SELECT count(*) AS n, count(*) FILTER (WHERE "
                    "registry_state = 'pending') AS p FROM node_events")[0]  # fmt: skip
        out["events"] += row["n"]
        out["undecided"] += row["p"]
    return out


# Seconds a drained pipeline must stay drained before it is checked: up to ~1.25 s after the
# last batch the registry's announcer sends the newest checkpoint and every node answers with
# a LogCosigned event, pending until decided; and the private broker's management statistics
# are refreshed every second.
QUIET_FOR = 2.5


class Quiet:
    """Whether a condition, polled again and again, has held for ``seconds`` in a row."""

    def __init__(self, seconds: float = QUIET_FOR) -> None:
        self.seconds = seconds
        self._since: float | None = None  # when it last became true

    def held(self, now_true: bool) -> float | None:
        """Record this poll; when it has held long enough, since when."""
        now = time.monotonic()
        if not now_true:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        return self._since if now - self._since >= self.seconds else None


def high_water(rt: Runtime) -> dict[str, int]:
    """Each node's last event sequence number."""
    return {c: query(rt.node_dsn(c), "SELECT COALESCE(max(sequence), 0) AS s FROM "
                     "node_events")[0]["s"] for c in NODES}  # fmt: skip


def decided_up_to(rt: Runtime, marks: dict[str, int]) -> bool:
    """True when every node event up to ``marks`` has the registry's answer."""
    return all(
        not query(
            rt.node_dsn(c),
            "SELECT 1 FROM node_events WHERE sequence <= %s AND registry_state = 'pending' LIMIT 1",
            (mark,),
        )
        for c, mark in marks.items()
    )


def unsent(rt: Runtime) -> int:
    """Outbox rows not yet confirmed by the broker, in every database."""
    dsns = [rt.registry_dsn, *(rt.node_dsn(c) for c in NODES)]
    return sum(query(d, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")[0]["n"]
               for d in dsns)  # fmt: skip


@dataclass
class Verdict:
    """What the databases say after a drain."""

    events: int = 0
    lost: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def missing(self, what: str, items: Iterable[Any]) -> None:
        items = sorted(items, key=str)
        if items:
            self.lost += len(items)
            self.problems.append(f"{len(items)} {what}: {items[:3]}")

    def twice(self, what: str, extra: int) -> None:
        if extra > 0:
            self.duplicates += extra
            self.problems.append(f"{extra} {what}")


def check(rt: Runtime, queues: list[dict[str, Any]]) -> Verdict:
    """Every comparison of the module docstring; ``queues`` from the management API."""
    v = Verdict()
    reg = rt.registry_dsn
    events, certs, confs, broken = {}, {}, {}, set()
    for code in NODES:
        dsn = rt.node_dsn(code)
        for r in query(dsn, "SELECT event_id::text, registry_state FROM node_events"):
            events[r["event_id"]] = (code, r["registry_state"])
        certs |= {r["certificate_id"]: code for r in query(dsn, "SELECT certificate_id FROM "
                                                          "certificates")}  # fmt: skip
        for r in query(dsn, "SELECT event_id::text, certificate_id, seal_intact FROM "
                       "import_confirmations"):  # fmt: skip
            confs[r["event_id"]] = r["certificate_id"]
            if not r["seal_intact"]:
                broken.add(("SEAL_BROKEN", r["certificate_id"]))
        _check_node_inbox(v, code, dsn)
    v.events = len(events)
    logged = {r["event_id"]: r for r in query(
        reg, "SELECT event_id::text, producer, decision FROM event_log WHERE producer = ANY(%s)",
        (list(NODES),))}  # fmt: skip
    v.missing("node events missing from the registry's event_log", events.keys() - logged)
    v.missing("node events still undecided at their node",
              [e for e, (_, state) in events.items() if state == "pending"])  # fmt: skip
    v.problems += [f"event {e} rejected: {r}" for e, r in logged.items() if r["decision"] !=
                   "ACCEPTED"]  # fmt: skip
    v.problems += [f"event {e} of {events[e][0]} not accepted at its node" for e in events
                   if events[e][1] not in ("accepted", "pending")]  # fmt: skip
    registry_rows = {r["certificate_id"]: r for r in query(
        reg, "SELECT certificate_id, producer, destination FROM certificates WHERE producer = "
        "ANY(%s)", (list(NODES),))}  # fmt: skip
    registry_certs = {c: r["producer"] for c, r in registry_rows.items()}
    v.missing("certificates missing from the registry", certs.keys() - registry_certs.keys())
    v.problems += [f"certificate {c} in the registry, at no node" for c in registry_certs.keys()
                   - certs.keys()]  # fmt: skip
    for code in NODES:  # every certificate naming a running node was announced to it
        owed = {c for c, r in registry_rows.items() if r["destination"] == code}
        told = {r["certificate_id"] for r in query(rt.node_dsn(code), "SELECT certificate_id "
                                                   "FROM expected_shipments")}  # fmt: skip
        v.missing(f"shipment notices that never reached {code}", owed - told)
    registry_confs = {r["event_id"] for r in query(reg, "SELECT event_id::text FROM "
                                                   "import_confirmations")}  # fmt: skip
    v.missing("import confirmations missing from the registry", confs.keys() - registry_confs)
    _check_registry_effects(v, reg, len(logged), len(certs))
    _check_reconciler(v, rt, reg, broken, len(logged))
    busy = [f"{q['name']}: {q.get('messages')}" for q in queues if q.get("messages", 1) != 0]
    v.problems += [f"queue not empty: {b}" for b in busy]
    left = unsent(rt)
    v.problems += [f"{left} outbox rows unsent"] if left else []
    v.problems += _log_problems(rt)
    return v


def _log_problems(rt: Runtime) -> list[str]:
    """The registry's log (DESIGN §12) still verifies: no decided event outside it, no leaf
    without its event, every checkpoint matching the tree, whatever was killed mid-batch."""
    conn = connect(rt.registry_dsn)
    try:
        key = registry_log.load_key(rt.keys_dir).verifier
        report = logcheck.verify(conn, key, checkpoint.origin_for(rt.region.code))
    finally:
        conn.close()
    return [f"log: {p}" for p in report.problems]


def single_events(dsn: str, table: str) -> Counter[str]:
    """The single events in the message bodies of ``table`` (the inbox or the outbox), by
    type: a batch message counts each decision, notice or accepted event in it."""
    store = default_store()
    counted: Counter[str] = Counter()
    for row in query(dsn, f"SELECT body FROM {table}"):
        env = read_verified(store, bytes(row["body"]))
        if env.event_type == AcceptedBatch.EVENT_TYPE:
            counted["AcceptedEvent"] += len(env.payload["events"])
            continue
        counted.update(kind for kind, _ in each_event(env.event_type, env.payload))
    return counted


def _check_node_inbox(v: Verdict, code: str, dsn: str) -> None:
    """A node got one decision per event, one notice per shipment (none twice)."""
    row = query(dsn, "SELECT (SELECT count(*) FROM node_events) AS events, (SELECT count(*) "
                "FROM expected_shipments) AS shipments")[0]  # fmt: skip
    told = single_events(dsn, "inbox")
    v.twice(f"decisions beyond one per event at {code}", told["RegistryDecision"] - row["events"])
    v.twice(f"shipment notices beyond one per shipment at {code}",
            told["ShipmentExpected"] - row["shipments"])  # fmt: skip


def _check_registry_effects(v: Verdict, reg: str, decided: int, certificates: int) -> None:
    """The registry wrote each effect once: history, decisions, notices, accepted events."""
    row = query(reg, "SELECT count(*) - count(DISTINCT (certificate_id, event_id)) AS history "
                "FROM certificate_history")[0]  # fmt: skip
    sent = single_events(reg, "outbox")
    v.twice("certificate history rows recorded twice", row["history"])
    v.twice("decisions beyond one per event in the registry's outbox",
            sent["RegistryDecision"] - decided)  # fmt: skip
    v.twice("shipment notices beyond one per certificate", sent["ShipmentExpected"] - certificates)
    v.twice("events republished to kpx.accepted twice", sent["AcceptedEvent"] - decided)
    v.missing("decisions never written to the registry's outbox",
              range(max(0, decided - sent["RegistryDecision"])))  # fmt: skip


def _check_reconciler(
    v: Verdict, rt: Runtime, reg: str, expected: set[tuple[str, str]], accepted: int
) -> None:
    """The reconciler saw every accepted event once and raised exactly the expected ones."""
    row = query(reg, "SELECT (SELECT count(*) FROM recon.processed WHERE producer = ANY(%s)) AS "
                "processed, (SELECT count(*) - count(DISTINCT event_id) FROM recon.confirmations)"
                " AS confirmations", (list(NODES),))[0]  # fmt: skip
    v.missing("accepted events the reconciler never processed",
              range(max(0, accepted - row["processed"])))  # fmt: skip
    v.twice("confirmations projected twice by the reconciler", row["confirmations"])
    raised = query(reg, "SELECT id, kind, certificate_id, participants FROM recon.discrepancies")
    got = [(r["kind"], r["certificate_id"]) for r in raised]
    v.twice("discrepancies raised twice", len(got) - len(set(got)))
    v.missing("expected discrepancies not raised", expected - set(got))
    v.problems += [f"discrepancy invented: {d}" for d in sorted(set(got) - expected)]
    for code in NODES:
        known = {r["discrepancy_id"] for r in query(rt.node_dsn(code), "SELECT discrepancy_id "
                                                    "FROM discrepancies")}  # fmt: skip
        owed = {r["id"] for r in raised if code in r["participants"]}
        v.missing(f"discrepancy notices that never reached {code}", owed - known)
