"""Registry ingest throughput beside the raw ceiling of the same machine, in the same run.

``python -m benchmarks.registry_bench [N]`` (default 20,000). Both measurements start with the
same N signed CertificateIssued messages already in a quorum queue:

- **raw ceiling**: pika consume (prefetch 500, one ``multiple`` ack per 500) and a PostgreSQL
  batched insert (500-row ``execute_values``, one commit per batch) of the bodies into a plain
  table — what any consumer of these bytes costs at least;
- **registry**: ``run_registry`` (relay off: publishing the answers is the relay's throughput,
  measured by the outbox benchmarks) — decode, verify the Ed25519 signature, run the rules, and
  write event log, certificate, parcels, history, sequences and three outbox rows (decision,
  ShipmentExpected, accepted event; two of them sealed and signed) per certificate.

Prints both rates and the ratio and returns them from :func:`run`. Uses ``KPX_AMQP_URL`` and
``KPX_DATABASE_URL`` (local defaults); a throw-away vhost and database are removed at the end.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import psycopg2
import psycopg2.extras
from pika.spec import BasicProperties

from exchange import postgres, topology
from exchange.admin import Admin
from exchange.certificate import (
    Certificate,
    Container,
    HsCode,
    Origin,
    OriginType,
    Parcel,
    Party,
    Scope,
)
from exchange.certnumber import regional_number
from exchange.codec import default_store
from exchange.envelope import seal
from exchange.events import Issuance
from exchange.region import Region, parse_region
from exchange.registry import service, store
from exchange.signing import Signer, generate_key

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


def registry_rate(
    admin_url: str, vhost: str, dsn: str, n: int, signers: dict[str, Signer]
) -> float:
    """Run the registry on the pre-filled kpx.registry until all n are decided; events/s."""
    region = _region(vhost)
    registry_signer = generate_key("XS")
    conn = postgres.connect(dsn)
    service.prepare_database(conn, region)
    with postgres.transaction(conn) as cur:
        for signer in signers.values():
            store.register_key(cur, signer.verify_key)
    stop = threading.Event()
    url = _url(admin_url, vhost, topology.registry_user(vhost))
    thread = threading.Thread(
        target=service.run_registry,
        args=(dsn, url, region, default_store(), registry_signer, stop),
        kwargs={"relay": False},
    )
    started = time.perf_counter()
    thread.start()
    while postgres.fetch_all(conn, "SELECT count(*) AS n FROM event_log")[0]["n"] < n:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join()
    accepted = postgres.fetch_all(
        conn, "SELECT count(*) AS n FROM event_log WHERE decision = 'ACCEPTED'"
    )[0]["n"]
    conn.close()
    if accepted != n:
        raise RuntimeError(f"only {accepted} of {n} events accepted")
    return n / elapsed


def run(n: int = 20_000) -> dict[str, float]:
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
        registry = registry_rate(admin_url, name, dsn, n, signers)
    finally:
        admin = Admin(admin_url)
        admin.delete_vhost(name)
        admin.close()
        postgres.drop_database(server, name)
    result = {"n": float(n), "raw_per_s": raw, "registry_per_s": registry, "ratio": registry / raw}
    print(
        f"registry ingest {registry:,.0f} events/s; raw consume + batched insert {raw:,.0f}/s; "
        f"ratio {result['ratio']:.2f} (goal >= 0.5), n = {n:,}"
    )
    return result


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
