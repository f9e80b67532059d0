"""Registry ingest throughput beside the raw ceiling of the same machine, in the same run.

``python -m benchmarks.registry_bench [N]`` (default 20,000). Both measurements start with the
same N signed CertificateIssued messages already in a quorum queue:

- **raw ceiling**: pika consume (prefetch 500, one ``multiple`` ack per 500) and a PostgreSQL
  batched insert (500-row ``execute_values``, one commit per batch) of the bodies into a plain
  table — what any consumer of these bytes costs at least;
- **registry**: ``run_registry`` (relay off: publishing the answers is the relay's throughput,
  measured by the outbox benchmarks; ``--processes N`` for N registries on the one queue,
  ``--helper`` for ``kpx registry run --verify-ahead``) — decode, verify the Ed25519
  signature (with ``--helper`` ahead, in a helper process: exchange/registry/preverify.py),
  run the rules, and
  write event log, certificate, parcels, history, sequences and, per batch, one signed
  decisions message per producer, one notices message per destination and one
  accepted-events message for the reconciler (the outbox rows per event are reported).

Prints both rates and the ratio and returns them from :func:`run`. Also measured, without a
broker: what the reconciler pays per accepted event to verify the producer's signature again
(``open_envelope``) against decoding it inside the registry's verified ``AcceptedEvents``
(``read_verified``) — :func:`reconciler_decode_cost`. Uses ``KPX_AMQP_URL`` and
``KPX_DATABASE_URL`` (local defaults); a throw-away vhost and database are removed at the end.

``python -m benchmarks.registry_bench --profile [N]`` measures instead where the ingest's CPU
goes (:func:`profile`): no broker, N pre-built signed deliveries (default 5,000) opened and
recorded in batches against a real throw-away database, first plainly (µs per event of this
process's CPU opening and recording, and the wall time of recording and committing), then
the next N under cProfile (µs per event in each hot function, inclusive; the profiler
inflates call-heavy code, so compare these only with another run of the same mode). The
signature helper (``--helper``) is started and warmed first, then measured apart: its CPU
per event (another process, on the other core, not in "client CPU") and the share of
signatures the opener took from it rather than verifying in line. The
handler appends to the transparency log as ``kpx registry run`` does with its log key, and
the plain pass also times every statement of the recording (client wall per statement text,
round trip included: where the recording waits on PostgreSQL).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import re
import secrets
import threading
import time
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from pika.spec import BasicProperties

from exchange.adapters import pgcopy, postgres
from exchange.adapters.management import Admin
from exchange.adapters.rabbitmq import Delivery
from exchange.domain import certificate, events
from exchange.domain.certificate import (
    Certificate,
    Container,
    HsCode,
    Origin,
    OriginType,
    Parcel,
    Party,
    Scope,
)
from exchange.domain.certnumber import regional_number
from exchange.domain.events import Issuance
from exchange.domain.region import Region, parse_region
from exchange.messaging.consumer import Database
from exchange.messaging.outbox import OutboxWriter
from exchange.registry import ingest, opening, policy, service, store
from exchange.registry import log as registry_log
from exchange.tlog import note
from exchange.tlog.checkpoint import origin_for
from exchange.wire import codec, envelope, signing, topology
from exchange.wire.codec import default_store
from exchange.wire.envelope import open_envelope, read_verified, seal
from exchange.wire.signing import Keyring, Signer, generate_key

MEMBERS = ("BW", "ZA", "NA")
PASSWORD = "bench-" + secrets.token_hex(8)
RAW_QUEUE = "bench.raw"


def _region(vhost: str) -> Region:
    members = {m: {"name": m, "authority": f"{m} authority"} for m in MEMBERS}
    return parse_region(
        {"region": {"code": "XS", "name": "bench"}, "broker": {"vhost": vhost}, "members": members}
    )


def _url(admin_url: str, vhost: str, user: str | None = None) -> str:
    parts = urlsplit(admin_url)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{quote(user, safe='')}:{PASSWORD}@{netloc.rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(vhost, safe=""), "", ""))


def _certificate(member: str, serial: int) -> Certificate:
    dest = MEMBERS[(MEMBERS.index(member) + 1) % len(MEMBERS)]
    carats, usd = Decimal("100.00") + serial % 50, Decimal("15000.00") + serial % 999
    return Certificate(
        certificate_id=regional_number("XS", member, 2026, serial),
        issuing_participant="XS",
        issuing_member=member,
        issuing_authority=f"{member} authority",
        destination=dest,
        origin=Origin(OriginType.UNMIXED, (member,)),
        exporter=Party("Exporter", "Mine Road 1", member, "EX-1"),
        importer=Party("Importer", "Bourse 2", dest, "IM-1"),
        date_of_issue=date(2026, 3, 1),
        date_of_expiry=date(2026, 4, 15),
        parcels=(Parcel(1, HsCode.HS_7102_10, carats, usd, member),),
        number_of_parcels=1,
        total_carats=carats,
        total_value_usd=usd,
        container=Container("C-1", ("S-1",)),
        scope=Scope.INTRA_REGIONAL,
    )


def _messages(n: int, signers: dict[str, Signer]) -> list[tuple[str, str, bytes]]:
    schemas = default_store()
    out = []
    for i in range(n):
        member = MEMBERS[i % len(MEMBERS)]
        sequence = i // len(MEMBERS) + 1
        record = Issuance(_certificate(member, sequence)).to_record()
        event_id, body = seal(schemas, signers[member], "CertificateIssued", record, sequence)
        out.append((member, event_id, body))
    return out


def _setup(admin_url: str, vhost: str) -> None:
    admin = Admin(admin_url)
    try:
        users = [topology.registry_user(vhost), topology.reconciler_user(vhost)]
        users += [topology.node_user(m, vhost) for m in MEMBERS]
        for user in users:
            admin.put_user(user, PASSWORD)
        admin.apply(topology.definitions(vhost, MEMBERS), urlsplit(admin_url).username or "guest")
        admin._call(
            "PUT",
            f"/queues/{quote(vhost, safe='')}/{RAW_QUEUE}",
            {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}},
        )
    finally:
        admin.close()


def _publish(admin_url: str, vhost: str, messages: list[tuple[str, str, bytes]]) -> None:
    """Put every message in kpx.registry (via kpx.events, as its node) and in the raw queue."""
    channels: dict[str, Any] = {}
    conns = []
    for member in MEMBERS:
        conn = pika.BlockingConnection(
            pika.URLParameters(_url(admin_url, vhost, topology.node_user(member, vhost)))
        )
        conns.append(conn)
        channels[member] = conn.channel()
    admin_conn = pika.BlockingConnection(pika.URLParameters(_url(admin_url, vhost)))
    conns.append(admin_conn)
    raw = admin_conn.channel()
    for member, event_id, body in messages:
        props = BasicProperties(
            message_id=event_id,
            type="CertificateIssued",
            user_id=topology.node_user(member, vhost),
            content_type="application/vnd.apache.avro+binary",
            delivery_mode=2,
        )
        channels[member].basic_publish(topology.EVENTS, f"{member}.CertificateIssued", body, props)
        raw.basic_publish("", RAW_QUEUE, body, BasicProperties(delivery_mode=2))
    for channel in channels.values():
        channel.confirm_delivery()  # waits for everything published before it
    raw.confirm_delivery()
    for conn in conns:
        conn.close()


def _wait_queued(admin_url: str, vhost: str, n: int) -> None:
    admin = Admin(admin_url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            depth = {q["name"]: q.get("messages", 0) for q in admin.queues(vhost)}
            if depth.get(topology.REGISTRY_QUEUE) == n and depth.get(RAW_QUEUE) == n:
                return
            time.sleep(0.5)
        raise RuntimeError(f"queues never reached {n} messages: {depth}")
    finally:
        admin.close()


def raw_ceiling(admin_url: str, vhost: str, dsn: str, n: int) -> float:
    """Consume the raw queue, insert each 500-message batch, commit, ack; events/s."""
    db = psycopg2.connect(dsn)
    with db.cursor() as cur:
        cur.execute("CREATE TABLE raw_bench (id bigserial PRIMARY KEY, body bytea NOT NULL)")
    db.commit()
    conn = pika.BlockingConnection(pika.URLParameters(_url(admin_url, vhost)))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=500)
    done, batch, started = 0, [], time.perf_counter()
    for method, _props, body in channel.consume(RAW_QUEUE, inactivity_timeout=1.0):
        if method is not None:
            batch.append((psycopg2.Binary(body),))
        if batch and (len(batch) >= 500 or method is None or done + len(batch) >= n):
            with db.cursor() as cur:
                psycopg2.extras.execute_values(
                    cur, "INSERT INTO raw_bench (body) VALUES %s", batch, page_size=500
                )
            db.commit()
            channel.basic_ack(method.delivery_tag if method else 0, multiple=True)
            done += len(batch)
            batch = []
        if done >= n:
            break
    elapsed = time.perf_counter() - started
    channel.cancel()
    conn.close()
    db.close()
    return n / elapsed


def _registry_process(
    dsn: str, url: str, vhost: str, stop: Any, batch_size: int, prefetch: int, ahead: bool
) -> None:
    """One registry in a child process (its own interpreter: no shared GIL) until ``stop``."""
    done = threading.Event()

    def relay_stop() -> None:
        stop.wait()
        done.set()

    threading.Thread(target=relay_stop, daemon=True).start()
    service.run_registry(
        dsn, url, _region(vhost), default_store(), generate_key("XS"), done,
        relay=False, batch_size=batch_size, prefetch=prefetch, verify_ahead=ahead,
    )  # fmt: skip


def registry_rate(
    admin_url: str,
    vhost: str,
    dsn: str,
    n: int,
    signers: dict[str, Signer],
    *,
    processes: int = 1,
    batch_size: int = 250,
    prefetch: int = 500,
    verify_ahead: bool = False,
) -> float:
    """Run the registry on the pre-filled kpx.registry until all n are decided; events/s.

    ``processes`` > 1 runs that many registries on the same queue, each in its own process.
    """
    region = _region(vhost)
    conn = postgres.connect(dsn)
    service.prepare_database(conn, region)
    with postgres.transaction(conn) as cur:
        for signer in signers.values():
            store.register_key(cur, signer.verify_key)
    url = _url(admin_url, vhost, topology.registry_user(vhost))
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    workers = [
        spawn.Process(
            target=_registry_process,
            args=(dsn, url, vhost, stop, batch_size, prefetch, verify_ahead),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    # The clock starts when the first registry has taken its first batch: process start-up
    # (imports, migrations) is no part of the ingest rate.
    while postgres.fetch_all(conn, "SELECT count(*) AS n FROM event_log")[0]["n"] == 0:
        time.sleep(0.005)
    started, first = time.perf_counter(), postgres.fetch_all(
        conn, "SELECT count(*) AS n FROM event_log")[0]["n"]  # fmt: skip
    while postgres.fetch_all(conn, "SELECT count(*) AS n FROM event_log")[0]["n"] < n:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop.set()
    for worker in workers:
        worker.join(timeout=60)
    accepted = postgres.fetch_all(
        conn, "SELECT count(*) AS n FROM event_log WHERE decision = 'ACCEPTED'"
    )[0]["n"]
    answers = postgres.fetch_all(
        conn, "SELECT count(*) AS n FROM outbox WHERE event_type <> 'LogCheckpoint'"
    )[0]["n"]
    conn.close()
    if accepted != n:
        raise RuntimeError(f"only {accepted} of {n} events accepted")
    print(f"registry outbox: {answers:,} answer messages for {n:,} events "
          f"({answers / n:.3f} per event; checkpoints not counted)")  # fmt: skip
    return float(n - first) / elapsed


def reconciler_decode_cost(n: int = 2_000) -> tuple[float, float]:
    """(us per event verifying each node signature, us per event decoding only) for ``n``
    accepted CertificateIssued envelopes: the reconciler's two choices for AcceptedEvents."""
    signers = {m: generate_key(m) for m in MEMBERS}
    bodies = [body for _, _, body in _messages(n, signers)]
    keyring = Keyring([s.verify_key for s in signers.values()])
    schemas = default_store()
    started = time.perf_counter()
    for body in bodies:
        open_envelope(schemas, keyring, body)
    verified = time.perf_counter() - started
    started = time.perf_counter()
    for body in bodies:
        read_verified(schemas, body)
    decoded = time.perf_counter() - started
    return verified / n * 1e6, decoded / n * 1e6


def run(
    n: int = 20_000,
    *,
    processes: int = 1,
    batch_size: int = 250,
    prefetch: int = 500,
    verify_ahead: bool = False,
) -> dict[str, float]:
    """Measure both rates on the same N messages; print and return them with their ratio."""
    admin_url = os.environ.get("KPX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    server = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"kpxb_{secrets.token_hex(4)}"
    dsn = postgres.dsn_for(server, name)
    postgres.create_database(server, name)
    _setup(admin_url, name)
    try:
        signers = {m: generate_key(m) for m in MEMBERS}
        _publish(admin_url, name, _messages(n, signers))
        _wait_queued(admin_url, name, n)
        raw = raw_ceiling(admin_url, name, dsn, n)
        registry = registry_rate(
            admin_url, name, dsn, n, signers,
            processes=processes, batch_size=batch_size, prefetch=prefetch,
            verify_ahead=verify_ahead,
        )  # fmt: skip
    finally:
        admin = Admin(admin_url)
        admin.delete_vhost(name)
        admin.close()
        postgres.drop_database(server, name)
    verify_us, decode_us = reconciler_decode_cost()
    result = {"n": float(n), "raw_per_s": raw, "registry_per_s": registry, "ratio": registry / raw,
              "processes": float(processes), "batch_size": float(batch_size),
              "reconciler_verify_us": verify_us, "reconciler_decode_us": decode_us}  # fmt: skip
    print(
        f"registry ingest {registry:,.0f} events/s; raw consume + batched insert {raw:,.0f}/s; "
        f"ratio {result['ratio']:.2f} (goal >= 0.3), n = {n:,}, {processes} process(es), "
        f"batches of {batch_size}, signature helper {'on' if verify_ahead else 'off'}"
    )
    print(
        f"reconciler, per accepted event: verify the node signature again {verify_us:,.0f} us, "
        f"decode inside the registry's verified AcceptedEvents {decode_us:,.0f} us"
    )
    return result


# What the profile reports, in this order: (label, function). Inclusive time per event; a
# name that this version of the code no longer has is skipped.
_HOT: tuple[tuple[str, str], ...] = (
    ("open (Ingest.decode)", "ingest.Ingest.decode"),
    ("  Avro decode (envelope + payload)", "codec.SchemaStore.decode"),
    ("  open_envelope", "envelope.open_envelope"),
    ("  Ed25519 verify", "signing.VerifyKey.verify"),
    ("  payload_from_record", "events.payload_from_record"),
    ("    text screen (check_text)", "events.check_text"),
    ("    NUL scan", "events._holds_nul"),
    ("    identifier bound", "events._overlong_identifier"),
    ("    Certificate.from_record", "certificate.Certificate.from_record"),
    ("  canonical JSON of the certificate", "certificate.certificate_json_text"),
    ("record (Ingest.record)", "ingest.Ingest.record"),
    ("  lock and load (_prepare)", "ingest.Ingest._prepare"),
    ("  decide (policy.decide)", "policy.decide"),
    ("  apply (policy.apply)", "policy.apply"),
    ("  answers (_Session._publish)", "ingest._Session._publish"),
    ("  write_decided", "ingest.write_decided"),
    ("    event log (store.write_log)", "store.write_log"),
    ("    state rows (store.write_changes)", "store.write_changes"),
    ("    COPY (pgcopy.copy_rows)", "pgcopy.copy_rows"),
    ("    outbox (OutboxWriter.append_many)", "outbox.OutboxWriter.append_many"),
    ("      Avro encode", "codec.SchemaStore.encode"),
    ("      Ed25519 sign", "signing.Signer.sign"),
    ("    accepted events (append_raw)", "outbox.OutboxWriter.append_raw"),
    ("    Merkle log (LogWriter.append)", "log.LogWriter.append"),
)
_MODULES: dict[str, Any] = {
    "ingest": ingest, "codec": codec, "envelope": envelope, "signing": signing,
    "events": events, "certificate": certificate, "policy": policy, "store": store,
    "pgcopy": pgcopy, "outbox": OutboxWriter, "opening": opening, "log": registry_log,
}  # fmt: skip


def _code_key(dotted: str) -> tuple[str, int, str] | None:
    """The cProfile key (file, first line, name) of ``module.[Class.]function``, if it exists."""
    module, *path = dotted.split(".")
    target: Any = _MODULES[module]
    if module == "outbox":
        path = path[1:]  # the class itself stands for the module
    for part in path:
        target = getattr(target, part, None)
        if target is None:
            return None
    code = getattr(getattr(target, "__func__", target), "__code__", None)
    if code is None:
        return None
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _deliveries(messages: list[tuple[str, str, bytes]], vhost: str) -> list[Delivery]:
    """The messages as the consumer hands them over: published by their node's broker user."""
    return [
        Delivery(
            tag,
            f"{member}.CertificateIssued",
            BasicProperties(
                message_id=event_id,
                type="CertificateIssued",
                user_id=topology.node_user(member, vhost),
            ),
            body,
            False,
        )
        for tag, (member, event_id, body) in enumerate(messages, 1)
    ]


class _TimedCursor(psycopg2.extensions.cursor):
    """A cursor that adds each statement's client wall time to :attr:`spent`, by its text
    (up to its first VALUES list, quoted literals blanked) while :attr:`on`."""

    spent: ClassVar[dict[str, list[float]]] = {}  # text -> [seconds, calls]
    on: ClassVar[bool] = False

    def execute(self, query: Any, vars: Any = None) -> None:
        started = time.perf_counter()
        try:
            super().execute(query, vars)
        finally:
            self._add(query, started)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        started = time.perf_counter()
        try:
            super().copy_expert(sql, file, size)
        finally:
            self._add(sql, started)

    def _add(self, query: Any, started: float) -> None:
        if _TimedCursor.on:
            text = query.decode() if isinstance(query, bytes) else str(query)
            text = re.sub(r"'[^']*'", "?", re.sub(r"VALUES .*", "VALUES …", text, flags=re.S))
            entry = _TimedCursor.spent.setdefault(text[:90], [0.0, 0])
            entry[0] += time.perf_counter() - started
            entry[1] += 1


def _ingest_batches(
    handler: ingest.Ingest,
    conn: postgres.Connection,
    deliveries: list[Delivery],
    batch_size: int,
    profiler: cProfile.Profile | None = None,
) -> dict[str, float]:
    """Open and record ``deliveries`` as the consumer does; seconds by phase.

    CPU is this process's (``time.process_time``): on a shared machine it moves far less
    than wall time, and recording's wall minus its CPU is the wait on PostgreSQL.
    """
    spent = dict.fromkeys(("open CPU", "record CPU", "record wall", "commit wall"), 0.0)
    for start in range(0, len(deliveries), batch_size):
        chunk = deliveries[start : start + batch_size]
        if profiler is not None:
            profiler.enable()
        c0 = time.process_time()
        handler.look_ahead(chunk)  # as the consumer does: the signatures go to the helper
        items = [handler.decode(d).item for d in chunk]
        c1, t1 = time.process_time(), time.perf_counter()
        with postgres.transaction(conn) as cur:
            handler.record(cur, [i for i in items if i is not None])
            c2, t2 = time.process_time(), time.perf_counter()
        t3 = time.perf_counter()
        if profiler is not None:
            profiler.disable()
        spent["open CPU"] += c1 - c0
        spent["record CPU"] += c2 - c1
        spent["record wall"] += t2 - t1
        spent["commit wall"] += t3 - t2
    return spent


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) a running process has used so far; 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _warm_helper(
    handler: ingest.Ingest, deliveries: list[Delivery], signers: dict[str, Signer]
) -> None:
    """Start the signature helper and wait for its first answer: the profile is of the
    steady state, not of the second or so a helper takes to start (``kpx registry run``
    pays that once, on its first large batch)."""
    ahead = handler.opener.ahead
    if ahead is None:
        return
    handler.look_ahead(deliveries)
    last = deliveries[-1]
    member = last.properties.user_id.rsplit("-", 1)[-1].upper()
    parts = envelope.signed_parts(last.body)
    assert parts is not None
    deadline = time.monotonic() + 60
    while not ahead.verified(signers[member].verify_key.public_key, *parts):
        if time.monotonic() > deadline:
            raise RuntimeError("the signature helper never answered")
        time.sleep(0.01)
    ahead.helped = 0


def profile(n: int = 5_000, batch_size: int = 250, verify_ahead: bool = False) -> dict[str, float]:
    """Where the ingest's CPU goes: µs per event by phase, plain and under cProfile.

    No broker: 2N signed CertificateIssued deliveries are built first, the first N opened and
    recorded plainly, the next N under cProfile, in batches of ``batch_size`` against a
    throw-away database. Prints the table and returns ``{label: µs per event}``.
    """
    server = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"kpxp_{secrets.token_hex(4)}"
    dsn = postgres.dsn_for(server, name)
    postgres.create_database(server, name)
    db = Database(dsn, "kpx-registry-profile")
    try:
        region = _region(name)
        signers = {m: generate_key(m) for m in MEMBERS}
        deliveries = _deliveries(_messages(2 * n, signers), name)
        conn = db.get()
        service.prepare_database(conn, region)
        with postgres.transaction(conn) as cur:
            for signer in signers.values():
                store.register_key(cur, signer.verify_key)
        log_key = note.generate_signer(origin_for(region.code))
        handler = service.ingest(
            db, region, default_store(), generate_key("XS"), log_key, verify_ahead=verify_ahead
        )
        _warm_helper(handler, deliveries[-64:], signers)
        helper_start = _cpu_of(handler.opener.ahead.helper_pid if handler.opener.ahead else None)
        conn.cursor_factory = _TimedCursor
        _TimedCursor.spent, _TimedCursor.on = {}, True
        plain = _ingest_batches(handler, conn, deliveries[:n], batch_size)
        _TimedCursor.on = False
        profiler = cProfile.Profile()
        _ingest_batches(handler, conn, deliveries[n:], batch_size, profiler)
        ahead = handler.opener.ahead
        helped = ahead.helped if ahead else 0
        helper_cpu = _cpu_of(ahead.helper_pid if ahead else None) - helper_start
        if ahead is not None:
            ahead.close(wait=True)
        accepted = postgres.fetch_all(
            conn, "SELECT count(*) AS n FROM event_log WHERE decision = 'ACCEPTED'"
        )[0]["n"]
        if accepted != 2 * n:
            raise RuntimeError(f"only {accepted} of {2 * n} events accepted")
    finally:
        db.close()
        postgres.drop_database(server, name)
    micro = 1e6 / n
    result = {f"plain: {phase}": seconds * micro for phase, seconds in plain.items()}
    result["plain: client CPU"] = (plain["open CPU"] + plain["record CPU"]) * micro
    # Both passes: the helper is not profiled, so its work is the same in each.
    result["signature helper CPU"] = helper_cpu * micro / 2
    result["signatures verified ahead (%)"] = 100.0 * helped / (2 * n)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for label, dotted in _HOT:
        key = _code_key(dotted)
        if key is not None and key in stats:
            result[label] = stats[key][3] * micro  # cumulative seconds
    print(f"registry ingest profile: {n:,} events plain, {n:,} profiled, batches of {batch_size}")
    for label, value in result.items():
        unit = "%" if label.endswith("(%)") else "µs/event"
        print(f"{label:<42} {value:8.1f} {unit}")
    print("statements of the plain pass (client wall, round trip included):")
    statements = sorted(_TimedCursor.spent.items(), key=lambda kv: -kv[1][0])
    for text, (seconds, calls) in statements:
        result[f"statement: {text}"] = seconds * micro
        print(f"{seconds * micro:8.1f} µs/event {calls:5d} calls  {text}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=None, help="events (20,000; 5,000)")
    parser.add_argument("--profile", action="store_true", help="where the CPU goes, no broker")
    parser.add_argument("--processes", type=int, default=1, help="registry processes (1)")
    parser.add_argument("--batch-size", type=int, default=250, help="events per batch (250)")
    parser.add_argument("--prefetch", type=int, default=500, help="consumer prefetch (500)")
    parser.add_argument(
        "--helper", action="store_true", help="verify signatures ahead in a helper process"
    )
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.n or 5_000, args.batch_size, verify_ahead=args.helper)
        return
    run(
        args.n or 20_000,
        processes=args.processes,
        batch_size=args.batch_size,
        prefetch=args.prefetch,
        verify_ahead=args.helper,
    )


if __name__ == "__main__":
    main()
