"""The reconciler on the real RabbitMQ and PostgreSQL: projection, every discrepancy kind
(event time through the broker; as-of through the SQL at the rules' edges), idempotence under
redelivery and re-runs, notices on the nodes' queues, statistics versions."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pika
import pytest
from click.testing import CliRunner
from support.services import Database, Vhost

from exchange.adapters.management import Admin
from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.domain.certnumber import regional_number
from exchange.domain.kpstats import Period
from exchange.domain.region import Region, load_region
from exchange.errors import NotFound
from exchange.messaging.outbox import OutboxRelay, OutboxWriter
from exchange.reconciler import aggregation, commands, deadline_checks, notices, service, store
from exchange.wire import topology
from exchange.wire.codec import SchemaStore, default_store
from exchange.wire.envelope import Envelope, open_envelope, seal
from exchange.wire.signing import Keyring, Signer, generate_key

REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"
AS_OF = date(2026, 8, 15)


@pytest.fixture(scope="module")
def codec() -> SchemaStore:
    return default_store()


@pytest.fixture(scope="module")
def region() -> Region:
    return load_region(REGION_FILE)


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {p: generate_key(p) for p in ("XS", "BW", "ZA", "LS", "NA", "EU", "AE", "XS-RECONCILER")}


@pytest.fixture
def keyring(signers: dict[str, Signer]) -> Keyring:
    return Keyring([s.verify_key for s in signers.values()])


@pytest.fixture
def db(database: Database) -> Iterator[Connection]:
    conn = connect(database.url)
    migrate(conn, "exchange.registry")
    service.prepare(database.url)
    yield conn
    conn.close()


def cid(member: str, serial: int) -> str:
    return regional_number("XS", member, 2026, serial)


def certificate(number: str, *, dest: str = "EU", issued: date = date(2026, 2, 1),
                expiry: date | None = None, carats: str = "100.00", usd: str = "1000.00",
                origin: str | None = None, hs: str = "HS_7102_10") -> dict[str, Any]:  # fmt: skip
    member = number.split("-")[1]
    party = {"name": "Co", "address": "1 Road", "country": member, "licence_no": "L1"}
    return {
        "certificate_id": number, "issuing_participant": "XS", "issuing_member": member,
        "issuing_authority": "Authority", "destination": dest,
        "origin": {"type": "UNMIXED", "countries": [origin or member]},
        "exporter": party, "importer": {**party, "country": dest},
        "date_of_issue": issued, "date_of_expiry": expiry or issued + timedelta(days=59),
        "parcels": [{"parcel_no": 1, "hs_code": hs, "carats": D(carats), "value_usd": D(usd),
                     "origin_country": None}],
        "number_of_parcels": 1, "total_carats": D(carats), "total_value_usd": D(usd),
        "container": {"container_id": "C1", "seal_numbers": ["S1"]},
        "lawful_import_evidence": [], "scope": "EXTERNAL",
    }  # fmt: skip


def confirmation(number: str, *, by: str = "EU", on: date = date(2026, 2, 10),
                 carats: str = "100.00", usd: str = "1000.00", parcels: int = 1,
                 seal_intact: bool = True) -> dict[str, Any]:  # fmt: skip
    return {
        "certificate_id": number, "issuing_participant": "XS", "importing_participant": by,
        "received_on": on, "parcels": parcels, "carats": D(carats), "value_usd": D(usd),
        "seal_intact": seal_intact, "remarks": "",
    }  # fmt: skip


class Events:
    """Seals events as their producers, numbering each producer's events."""

    def __init__(self, codec: SchemaStore, signers: dict[str, Signer]) -> None:
        self.codec, self.signers, self.seq = codec, signers, dict.fromkeys(signers, 0)

    def __call__(self, producer: str, event_type: str, record: dict[str, Any]) -> bytes:
        self.seq[producer] += 1
        signer = self.signers[producer]
        return seal(self.codec, signer, event_type, record, self.seq[producer])[1]

    def issued(self, cert: dict[str, Any]) -> bytes:
        return self(cert["issuing_member"], "CertificateIssued", {"certificate": cert})

    def confirmed(self, conf: dict[str, Any]) -> bytes:
        return self(conf["importing_participant"], "ImportConfirmed", conf)

    def voided(self, number: str, replaced_by: str | None = None) -> bytes:
        record = {"certificate_id": number, "issuing_participant": "XS",
                  "voided_on": date(2026, 2, 2), "reason": "corrected",
                  "replaced_by": replaced_by}  # fmt: skip
        return self(number.split("-")[1], "CertificateVoided", record)

    def production(self, member: str, period: str, carats: str) -> bytes:
        record = {"participant": member, "period": period, "producer_id": "MINE-1",
                  "carats": D(carats), "value_usd": D(carats) * 10}  # fmt: skip
        return self(member, "ProductionDeclared", record)


def topology_on(vhost: Vhost, region: Region) -> None:
    defs = topology.definitions(vhost.name, region.node_codes)
    defs["permissions"], defs["topic_permissions"] = [], []  # the test connects as the admin
    admin = Admin(vhost.amqp_url)
    try:
        admin.apply(defs, "guest")
    finally:
        admin.close()


def publish(vhost: Vhost, bodies: list[bytes]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    channel = conn.channel()
    channel.confirm_delivery()
    for body in bodies:
        props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")
        channel.basic_publish(topology.ACCEPTED, "x.accepted", body, props)
    conn.close()


def drain_queue(vhost: Vhost, queue: str) -> list[bytes]:
    conn = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    channel, out = conn.channel(), []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append(body)
    conn.close()
    return out


def count(conn: Connection, query: str) -> int:
    with transaction(conn) as cur:
        cur.execute(query)
        row = cur.fetchone()
    return int(row[0]) if row else 0


def found(conn: Connection) -> set[tuple[str, str | None]]:
    with transaction(conn) as cur:
        cur.execute("SELECT kind, COALESCE(certificate_id, array_to_string(participants, '>')"
                    " || ' ' || COALESCE(period, '')) FROM recon.discrepancies")  # fmt: skip
        return {(k, w) for k, w in cur.fetchall()}


def run_until(reconciler: service.Reconciler, conn: Connection, events: int) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while count(conn, "SELECT count(*) FROM recon.processed") < events:
            assert time.monotonic() < deadline, "the reconciler did not catch up"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=20)


def event_time_scenario(ev: Events) -> tuple[list[bytes], set[tuple[str, str | None]]]:
    c = [certificate(cid("BW", n)) for n in range(1, 14)]
    c[8] = certificate(cid("BW", 9), expiry=date(2026, 2, 9))  # expired the day before receipt
    c[9] = certificate(cid("BW", 10), expiry=date(2026, 2, 10))  # receipt on the day of expiry
    late_first = confirmation(cid("BW", 13), carats="99.49")  # arrives before its certificate
    bodies = [ev.confirmed(late_first)] + [ev.issued(x) for x in c[:12]] + [
        ev.confirmed(confirmation(cid("BW", 1))),  # clean
        ev.confirmed(confirmation(cid("BW", 2), carats="99.49")),  # one cent beyond 0.5 %
        ev.confirmed(confirmation(cid("BW", 3), carats="100.50")),  # exactly at 0.5 %
        ev.confirmed(confirmation(cid("BW", 4), usd="1020.01")),  # one cent beyond 2 %
        ev.confirmed(confirmation(cid("BW", 5), parcels=2)),
        ev.confirmed(confirmation(cid("BW", 6), seal_intact=False)),
        ev.confirmed(confirmation(cid("BW", 7), by="AE")),
        ev.voided(cid("BW", 8), replaced_by=cid("BW", 12)),
        ev.confirmed(confirmation(cid("BW", 8))),
        ev.confirmed(confirmation(cid("BW", 9))),
        ev.confirmed(confirmation(cid("BW", 10))),
        ev.confirmed(confirmation(cid("BW", 11))),
        ev.confirmed(confirmation(cid("BW", 11), on=date(2026, 2, 20))),
        ev.issued(c[12]),
    ]  # fmt: skip
    expected = {
        ("CARAT_MISMATCH", cid("BW", 2)), ("VALUE_MISMATCH", cid("BW", 4)),
        ("PARCEL_MISMATCH", cid("BW", 5)), ("SEAL_BROKEN", cid("BW", 6)),
        ("WRONG_DESTINATION", cid("BW", 7)), ("VOIDED_BUT_IMPORTED", cid("BW", 8)),
        ("IMPORTED_AFTER_EXPIRY", cid("BW", 9)), ("DUPLICATE_IMPORT", cid("BW", 11)),
        ("CARAT_MISMATCH", cid("BW", 13)),
    }  # fmt: skip
    return bodies, expected


def test_event_time_checks_find_exactly_the_seeded_set_once_and_notify_nodes(
    db: Connection, database: Database, vhost: Vhost, region: Region, codec: SchemaStore,
    signers: dict[str, Signer], keyring: Keyring,
) -> None:  # fmt: skip
    topology_on(vhost, region)
    bodies, expected = event_time_scenario(Events(codec, signers))
    publish(vhost, [*bodies, b"not an envelope"])
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    reconciler = service.Reconciler(database.url, vhost.amqp_url, ctx, codec, keyring)
    run_until(reconciler, db, len(bodies))
    assert found(db) == expected
    assert count(db, "SELECT count(*) FROM recon.certificates") == 13
    assert count(db, "SELECT count(*) FROM recon.confirmations") == 13
    assert drain_queue(vhost, topology.DEAD_QUEUE) == [b"not an envelope"]

    publish(vhost, bodies)  # every event redelivered: nothing new
    run_until(reconciler, db, len(bodies))
    time.sleep(0.5)
    assert count(db, "SELECT count(*) FROM recon.discrepancies") == len(expected)
    assert count(db, "SELECT count(*) FROM recon.confirmations") == 13

    stop = threading.Event()
    relay = OutboxRelay(database.url, vhost.amqp_url, "XS-RECONCILER", poll_interval=0.2)
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 15
    while (
        count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=15)
    notices = [open_envelope(codec, keyring, b) for b in drain_queue(vhost, "kpx.node.BW")]
    assert {(n.payload["kind"], n.payload["certificate_id"]) for n in notices} == expected
    assert {n.producer for n in notices} == {"XS-RECONCILER"}
    to_ae = [open_envelope(codec, keyring, b) for b in drain_queue(vhost, "kpx.node.AE")]
    assert [n.payload["kind"] for n in to_ae] == ["WRONG_DESTINATION"]


# ---------------------------------------------------------------- as of a date


def apply(conn: Connection, ctx: store.Context, codec: SchemaStore, keyring: Keyring,
          bodies: list[bytes]) -> None:  # fmt: skip
    envelopes: list[Envelope] = [open_envelope(codec, keyring, b) for b in bodies]
    with transaction(conn) as cur:
        store.apply_batch(cur, ctx, envelopes, AS_OF)


def as_of_scenario(ev: Events) -> tuple[list[bytes], set[tuple[str, str | None]]]:
    grace_end = AS_OF - timedelta(days=30)
    bodies = [
        # UNCONFIRMED_EXPIRED: expiry + 30 days == AS_OF passes, one day earlier fails
        ev.issued(certificate(cid("NA", 1), issued=date(2026, 7, 1), expiry=grace_end)),
        ev.issued(certificate(cid("NA", 2), issued=date(2026, 7, 1),
                              expiry=grace_end - timedelta(days=1))),
        # UNKNOWN_CERTIFICATE: received + 30 == AS_OF passes, a day earlier fails; rejected fails
        ev.confirmed(confirmation(cid("BW", 901), on=grace_end)),
        ev.confirmed(confirmation(cid("BW", 902), on=grace_end - timedelta(days=1))),
        ev.confirmed(confirmation(cid("BW", 903), on=date(2026, 8, 1))),
        ev.confirmed(confirmation("AE-FOREIGN-1", on=date(2026, 7, 1))),
        # EXPORTS_EXCEED_SUPPLY: BW exactly production + stock carried in; LS one cent over
        ev.production("BW", "2025-H2", "50.00"), ev.production("BW", "2026-H1", "100.00"),
        ev.issued(certificate(cid("BW", 1), carats="75.00")),
        ev.issued(certificate(cid("BW", 2), carats="75.00")),
        ev.confirmed(confirmation(cid("BW", 1), carats="75.00")),
        ev.confirmed(confirmation(cid("BW", 2), carats="75.00")),
        ev.production("LS", "2026-H1", "100.00"),
        ev.issued(certificate(cid("LS", 1), carats="100.01")),
        ev.confirmed(confirmation(cid("LS", 1), carats="100.01")),
        # MIRROR_MISMATCH: exported in Q2, confirmed in Q3
        ev.issued(certificate(cid("ZA", 1), dest="AE", issued=date(2026, 6, 20), origin="RU")),
        ev.confirmed(confirmation(cid("ZA", 1), by="AE", on=date(2026, 7, 5))),
    ]  # fmt: skip
    # VALUATION_OUTLIER: 30 parcels of CD origin near 100-129 USD/ct, and one at 1000 USD/ct
    for n in range(30):
        usd = f"{1000 + 10 * n}.00"
        cert = certificate(cid("ZA", 100 + n), issued=date(2026, 7, 10), origin="CD",
                           hs="HS_7102_21", carats="10.00", usd=usd)  # fmt: skip
        bodies.append(ev.issued(cert))
    bodies.append(ev.issued(certificate(cid("ZA", 200), issued=date(2026, 7, 10), origin="CD",
                  hs="HS_7102_21", carats="10.00", usd="10000.00")))  # fmt: skip
    expected = {
        ("UNCONFIRMED_EXPIRED", cid("NA", 2)), ("UNKNOWN_CERTIFICATE", cid("BW", 902)),
        ("UNKNOWN_CERTIFICATE", cid("BW", 903)), ("VALUATION_OUTLIER", cid("ZA", 200)),
        ("EXPORTS_EXCEED_SUPPLY", "LS 2026-H1"), ("MIRROR_MISMATCH", "ZA>AE 2026-Q2"),
        ("SEQUENCE_GAP", "BW "),
    }  # fmt: skip
    return bodies, expected


def simulate_registry(conn: Connection) -> None:
    """Rows the registry would have written: a rejected certificate and sequence gaps."""
    end = datetime.combine(AS_OF + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    with transaction(conn) as cur:
        cur.execute(
            "INSERT INTO event_log (event_id, producer, sequence, event_type, certificate_id,"
            " decision, reason, detail, body) VALUES (%s, 'BW', 77, 'CertificateIssued', %s,"
            " 'REJECTED', 'TOTALS_MISMATCH', 'parcel sums differ', '\\x00')",
            (str(uuid.uuid4()), cid("BW", 903)),
        )
        gaps = [("BW", 5, 7, end - timedelta(hours=25))]
        gaps += [("ZA", 3, 3, end - timedelta(hours=24))]  # exactly at the timeout
        cur.executemany(
            "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence,"
            " detected_at) VALUES (%s, %s, %s, %s)",
            gaps,
        )
        cur.execute(  # filled: no longer open
            "INSERT INTO sequence_gap_fills (producer, sequence, detected_at, filled_at)"
            " VALUES ('NA', 9, %s, %s)",
            (end - timedelta(days=5), end - timedelta(days=4)),
        )


def test_reconcile_as_of_raises_each_kind_exactly_once_at_the_edges(
    db: Connection, region: Region, codec: SchemaStore, signers: dict[str, Signer],
    keyring: Keyring,
) -> None:  # fmt: skip
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    bodies, expected = as_of_scenario(Events(codec, signers))
    apply(db, ctx, codec, keyring, bodies)
    simulate_registry(db)
    assert found(db) == set()  # nothing at event time: the scenario is clean until AS_OF

    summary = deadline_checks.reconcile(db, ctx, AS_OF)
    assert found(db) == expected
    assert summary.total == len(expected)
    details = _details(db)
    detail = dict(details)
    assert "robust z" in detail["VALUATION_OUTLIER"] and "MAD" in detail["VALUATION_OUTLIER"]
    assert "stock carried in 0.00 ct" in detail["EXPORTS_EXCEED_SUPPLY"]
    unknown = sorted(d for k, d in details if k == "UNKNOWN_CERTIFICATE")
    assert "never received" in unknown[0] and "rejected (TOTALS_MISMATCH" in unknown[1]

    again = deadline_checks.reconcile(db, ctx, AS_OF)
    assert again.total == 0 and found(db) == expected
    notices = count(db, "SELECT count(*) FROM outbox WHERE relay = 'XS-RECONCILER'")
    assert notices >= len(expected)  # one per concerned node


def _details(conn: Connection) -> list[tuple[str, str]]:
    with transaction(conn) as cur:
        cur.execute("SELECT kind, detail FROM recon.discrepancies ORDER BY id")
        return list(cur.fetchall())


def test_discrepancies_are_listed_by_filter_and_resolved_with_a_note(
    db: Connection, region: Region, codec: SchemaStore, signers: dict[str, Signer],
    keyring: Keyring,
) -> None:  # fmt: skip
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    bodies, _ = as_of_scenario(Events(codec, signers))
    apply(db, ctx, codec, keyring, bodies)
    deadline_checks.reconcile(db, ctx, AS_OF)
    with transaction(db) as cur:
        mirror = store.list_discrepancies(cur, kind="MIRROR_MISMATCH", participant="AE")
        assert [(d["participants"], d["period"]) for d in mirror] == [(["ZA", "AE"], "2026-Q2")]
        assert store.list_discrepancies(cur, period="2026-H1")[0]["kind"] == "EXPORTS_EXCEED_SUPPLY"
        store.resolve(cur, mirror[0]["id"], "goods in transit at the quarter's end")
        resolved = store.list_discrepancies(cur, status="RESOLVED")
    assert [(d["status"], d["note"]) for d in resolved] == [
        ("RESOLVED", "goods in transit at the quarter's end")
    ]


def test_statistics_are_versioned_and_show_what_a_late_event_changed(
    db: Connection, region: Region, codec: SchemaStore, signers: dict[str, Signer],
    keyring: Keyring,
) -> None:  # fmt: skip
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    ev = Events(codec, signers)
    apply(db, ctx, codec, keyring, [
        ev.issued(certificate(cid("BW", 1), carats="75.00", usd="750.00")),
        ev.production("BW", "2026-H1", "100.00"),
    ])  # fmt: skip
    q1 = Period.parse("2026-Q1")
    first = aggregation.publish(db, q1, "XS", list(region.node_codes))
    assert (first.version, first.previous_version, first.new_version) == (1, None, True)
    rows = {(r["section"], r["flow"], r["by"], r["key"]): r for r in first.rows}
    assert rows["trade", "export", "partner", "EU"]["carats"] == "75.00"
    assert rows["trade", "export", "partner", "EU"]["usd_per_carat"] == "10.00"
    assert rows["production", "production", "total", ""]["period"] == "2026-H1"
    assert rows["mirror", "mirror", "partner", "EU"]["mirror_carats"] == "0.00"
    assert aggregation.publish(db, q1, "XS", list(region.node_codes)).new_version is False

    apply(
        db,
        ctx,
        codec,
        keyring,
        [ev.confirmed(confirmation(cid("BW", 1), carats="75.00", usd="750.00"))],
    )
    second = aggregation.publish(db, q1, "XS", list(region.node_codes))
    assert (second.version, second.previous_version) == (2, 1)
    changed = {c.key[:3] + c.key[4:] for c in second.changes}
    assert ("trade", "EU", "2026-Q1", "partner", "BW") in changed
    assert ("mirror", "BW", "2026-Q1", "partner", "EU") in changed
    assert replace(second, changes=[]).rows == second.rows


class _Obj:
    """The parts of the CLI's runtime object the commands use."""

    def __init__(self, dsn: str, region: Region, codec: SchemaStore, signer: Signer) -> None:
        self.registry_dsn, self.region, self.store, self._signer = dsn, region, codec, signer

    def signer(self, producer: str) -> Signer:
        assert producer == "XS-RECONCILER"
        return self._signer


def test_commands_reconcile_list_resolve_and_publish_statistics(
    db: Connection, database: Database, region: Region, codec: SchemaStore,
    signers: dict[str, Signer], keyring: Keyring,
) -> None:  # fmt: skip
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    bodies, expected = as_of_scenario(Events(codec, signers))
    apply(db, ctx, codec, keyring, bodies)
    obj = _Obj(database.url, region, codec, signers["XS-RECONCILER"])
    runner = CliRunner()
    out = runner.invoke(commands.reconcile, ["--as-of", AS_OF.isoformat(), "--json"], obj=obj)
    assert out.exit_code == 0, out.output
    # no registry rows simulated here: no sequence gap, no rejected certificate
    assert json.loads(out.output)["total"] == len(expected) - 2
    out = runner.invoke(commands.discrepancies, ["--json", "--kind", "SEQUENCE_GAP"], obj=obj)
    assert json.loads(out.output) == []
    out = runner.invoke(commands.discrepancies, ["--json", "--participant", "LS"], obj=obj)
    (item,) = json.loads(out.output)
    assert {"kind", "certificate_id", "participants", "period", "detail", "status"} <= set(item)
    out = runner.invoke(
        commands.discrepancies, ["resolve", str(item["id"]), "--note", "ok"], obj=obj
    )
    assert out.exit_code == 0 and "resolved" in out.output
    out = runner.invoke(commands.discrepancies, ["resolve", "999999", "--note", "x"], obj=obj)
    # The command lets the error go; exchange/app/cli.py's boundary prints it (test_cli.py).
    assert isinstance(out.exception, NotFound) and "does not exist" in str(out.exception)
    out = runner.invoke(commands.stats, ["--period", "2026-H1", "--format", "csv"], obj=obj)
    assert out.exit_code == 0 and out.output.startswith("section,participant,period,flow")


def test_a_confirmation_by_a_third_party_does_not_silence_unconfirmed_expired(
    db: Connection, region: Region, codec: SchemaStore, signers: dict[str, Signer],
    keyring: Keyring,
) -> None:  # fmt: skip
    # Member isolation (DESIGN §15): only the destination's confirmation counts as confirmed.
    ctx = service.context(region, codec, signers["XS-RECONCILER"])
    ev, expired = Events(codec, signers), AS_OF - timedelta(days=31)
    bodies = [
        ev.issued(certificate(cid("NA", 3), issued=date(2026, 6, 1), expiry=expired)),
        ev.confirmed(confirmation(cid("NA", 3), by="AE", on=date(2026, 6, 5))),
        ev.issued(certificate(cid("NA", 4), issued=date(2026, 6, 1), expiry=expired)),
        ev.confirmed(confirmation(cid("NA", 4), by="EU", on=date(2026, 6, 5))),
        ev.issued(certificate(cid("NA", 5), dest="XS", issued=date(2026, 6, 1), expiry=expired)),
        ev.confirmed(confirmation(cid("NA", 5), by="BW", on=date(2026, 6, 5))),  # a member
    ]  # fmt: skip
    apply(db, ctx, codec, keyring, bodies)
    assert found(db) == {("WRONG_DESTINATION", cid("NA", 3))}

    deadline_checks.reconcile(db, ctx, AS_OF)  # period checks fire too: not this test's subject
    ours = {cid("NA", n) for n in (3, 4, 5)}
    assert {(k, c) for k, c in found(db) if c in ours} == {
        ("WRONG_DESTINATION", cid("NA", 3)), ("UNCONFIRMED_EXPIRED", cid("NA", 3)),
    }  # fmt: skip


# ---------------------------------------------------------------- as-of notices, after the run

EXPIRED_CERTIFICATES = """
INSERT INTO recon.certificates (certificate_id, issuing_participant, exporter, destination,
    origin_type, origin_countries, date_of_issue, date_of_expiry, number_of_parcels,
    total_carats, total_value_usd, event_id)
SELECT format('XS-%%s-2026-%%s-00', e, lpad(i::text, 7, '0')), 'XS', e,
       (ARRAY['EU', 'AE', 'LS', 'KR'])[1 + i %% 4], 'UNMIXED', ARRAY[e], '2026-01-10',
       '2026-03-10', 1, 10, 1000, gen_random_uuid()
FROM generate_series(1, %s) i, LATERAL (SELECT (ARRAY['BW', 'ZA', 'NA'])[1 + i %% 3] AS e) x
"""


@pytest.fixture
def ctx(region: Region, codec: SchemaStore, signers: dict[str, Signer]) -> store.Context:
    return service.context(region, codec, signers["XS-RECONCILER"])


def expired_unconfirmed(conn: Connection, n: int) -> None:
    """``n`` certificates expired long before AS_OF and never confirmed: each is one
    UNCONFIRMED_EXPIRED, notified to its exporter and to its destination when that runs a
    node (KR runs none), so a run seals notices over several chunks."""
    with transaction(conn) as cur:
        cur.execute(EXPIRED_CERTIFICATES, (n,))


def expected_notices(conn: Connection, region: Region) -> set[tuple[int, str]]:
    """(discrepancy id, node) of every notice the stored discrepancies call for."""
    with transaction(conn) as cur:
        cur.execute("SELECT id, participants FROM recon.discrepancies")
        rows = cur.fetchall()
    return {(i, code) for i, who in rows for code in who if code in region.node_codes}


def sealed_notices(conn: Connection, codec: SchemaStore, keyring: Keyring) -> list[tuple[int, str]]:
    """(discrepancy id, node) of every DiscrepancyRaised in the reconciler's outbox, opened."""
    with transaction(conn) as cur:
        cur.execute("SELECT routing_key, body FROM outbox WHERE relay = 'XS-RECONCILER'")
        rows = cur.fetchall()
    out = []
    for key, body in rows:
        env = open_envelope(codec, keyring, bytes(body))
        assert env.event_type == "DiscrepancyRaised" and key.endswith(".DiscrepancyRaised")
        out.append((int(env.payload["discrepancy_id"]), key.split(".")[0]))
    return out


def assert_each_notified_once(
    conn: Connection, region: Region, codec: SchemaStore, keyring: Keyring
) -> None:
    sealed = sealed_notices(conn, codec, keyring)
    assert len(sealed) == len(set(sealed)), "a notice was sealed twice"
    assert set(sealed) == expected_notices(conn, region), "a notice is missing"
    assert notices.unsealed(conn) == 0


class InjectedCrash(RuntimeError):
    """The crash a test injects into a run."""


class CrashingSigner:
    """Signs as ``signer`` until ``after`` signatures, then fails as a crashed process would."""

    def __init__(self, signer: Signer, after: int) -> None:
        self.signer, self.left = signer, after

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    @property
    def producer(self) -> str:
        return self.signer.producer

    def sign(self, message: bytes) -> bytes:
        if self.left == 0:
            raise InjectedCrash("killed while sealing")
        self.left -= 1
        return self.signer.sign(message)


def test_a_run_that_crashed_before_sealing_is_notified_exactly_once_by_the_next_run(
    db: Connection, ctx: store.Context, region: Region, codec: SchemaStore, keyring: Keyring
) -> None:
    expired_unconfirmed(db, 3000)
    # The run's transaction alone, as if the process died right after its commit.
    first = deadline_checks.record(db, ctx, AS_OF)
    assert first.raised["UNCONFIRMED_EXPIRED"] == 3000
    assert notices.unsealed(db) == first.total  # every finding marked, in the same commit
    assert sealed_notices(db, codec, keyring) == []

    again = deadline_checks.reconcile(db, ctx, AS_OF)
    assert again.total == 0  # nothing raised twice ...
    assert_each_notified_once(db, region, codec, keyring)  # ... and the leftovers sealed once
    before = len(sealed_notices(db, codec, keyring))
    assert deadline_checks.reconcile(db, ctx, AS_OF).total == 0
    assert len(sealed_notices(db, codec, keyring)) == before  # a re-run seals nothing new


def test_a_run_that_crashed_while_sealing_keeps_the_rest_marked_and_loses_nothing(
    db: Connection, ctx: store.Context, region: Region, codec: SchemaStore,
    signers: dict[str, Signer], keyring: Keyring,
) -> None:  # fmt: skip
    expired_unconfirmed(db, 3000)
    signer = CrashingSigner(signers["XS-RECONCILER"], after=2 * notices.CHUNK + 500)
    crashing = replace(ctx, writer=OutboxWriter(codec, signer, relay="XS-RECONCILER"))
    with pytest.raises(InjectedCrash):
        deadline_checks.reconcile(db, crashing, AS_OF)
    # The findings committed; the chunks sealed before the crash committed with their markers
    # cleared; the chunk being sealed rolled back whole and is still marked.
    total = count(db, "SELECT count(*) FROM recon.discrepancies")
    done = sealed_notices(db, codec, keyring)
    assert 0 < len(done) <= 2 * notices.CHUNK + 500
    assert notices.unsealed(db) == total - len({i for i, _ in done})
    assert notices.unsealed(db) > 0

    assert deadline_checks.reconcile(db, ctx, AS_OF).total == 0
    assert_each_notified_once(db, region, codec, keyring)


def test_two_sealers_at_once_seal_each_notice_once(
    db: Connection, database: Database, ctx: store.Context, region: Region, codec: SchemaStore,
    keyring: Keyring,
) -> None:  # fmt: skip
    # The command sealing after its commit while the service seals leftovers.
    expired_unconfirmed(db, 6000)
    deadline_checks.record(db, ctx, AS_OF)
    taken: list[int] = []

    def seal() -> None:
        conn = connect(database.url)
        try:
            taken.append(notices.seal_pending(conn, ctx, chunk=500))
        finally:
            conn.close()

    threads = [threading.Thread(target=seal) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(taken) == count(db, "SELECT count(*) FROM recon.discrepancies")
    assert_each_notified_once(db, region, codec, keyring)


def test_the_running_service_seals_what_a_crashed_run_left_and_relays_it(
    db: Connection, database: Database, vhost: Vhost, ctx: store.Context, region: Region,
    codec: SchemaStore, signers: dict[str, Signer], keyring: Keyring,
) -> None:  # fmt: skip
    topology_on(vhost, region)
    expired_unconfirmed(db, 30)
    deadline_checks.record(db, ctx, AS_OF)  # then the command died
    assert notices.unsealed(db) > 0
    stop = threading.Event()
    thread = threading.Thread(
        target=service.run_service,
        args=(database.url, vhost.amqp_url, region, codec, keyring, signers["XS-RECONCILER"],
              stop),
        kwargs={"seal_interval": 0.2},
    )  # fmt: skip
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") or notices.unsealed(
            db
        ):
            assert time.monotonic() < deadline, "the service did not seal and relay the notices"
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert_each_notified_once(db, region, codec, keyring)
    delivered = [open_envelope(codec, keyring, b) for b in drain_queue(vhost, "kpx.node.BW")]
    assert sorted(n.payload["discrepancy_id"] for n in delivered) == sorted(
        i for i, code in expected_notices(db, region) if code == "BW"
    )
