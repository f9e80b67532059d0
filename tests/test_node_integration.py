"""A national node against the real RabbitMQ and PostgreSQL (issue 3's "done when").

One private copy of the example region is provisioned for the module (``provisioned_region``);
each test works as a different member, so sequence numbers and queue contents of one test
never mix with another's. Operations go through ``Node.submit`` (the Python API) and through
``kpx node submit --member XX -`` (the command), the relay publishes to the region's broker,
and what reached ``kpx.registry`` is read back and opened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from support.broker import read_back

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxRelay, OutboxWriter, backlog
from exchange.wire import topology
from nodes.operations import Node, Result

KPX = Path(sys.executable).with_name("kpx")
TABLES = ("certificates", "node_events", "outbox", "import_confirmations", "production")


def certificate(destination: str = "AE", *, carats: str = "1000.50", **changes: Any) -> dict:
    """A valid certificate body for an ``issue`` line (no number: the node allocates it)."""
    cert: dict[str, Any] = {
        "destination": destination,
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {"name": "Okavango Diamond Company", "address": "Gaborone",
                     "country": "BW", "licence_no": "BW-EX-1"},
        "importer": {"name": "DMCC Trader", "address": "Dubai", "country": destination,
                     "licence_no": "IM-9"},
        "date_of_issue": "2026-11-20",
        "date_of_expiry": "2026-12-20",
        "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": carats,
                     "value_usd": "192000.00", "origin_country": "BW"}],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }  # fmt: skip
    cert.update(changes)
    return cert


def issue(**changes: Any) -> str:
    return json.dumps({"op": "issue", "certificate": certificate(**changes)})


def node(rt: Runtime, code: str) -> Node:
    return Node(code, rt.region, OutboxWriter(rt.store, rt.signer(code)))


def submit(rt: Runtime, code: str, lines: list[str]) -> list[Result]:
    conn = postgres.connect(rt.node_dsn(code))
    try:
        return list(node(rt, code).submit(conn, lines))
    finally:
        conn.close()


def counts(rt: Runtime, code: str) -> dict[str, int]:
    conn = postgres.connect(rt.node_dsn(code))
    try:
        with postgres.transaction(conn) as cur:
            result = {}
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM {table}")  # table names are constants
                result[table] = cur.fetchone()[0]
            return result
    finally:
        conn.close()


def outbox_events(rt: Runtime, code: str) -> list[Any]:
    """Every event in the node's outbox, opened (signature verified), in outbox order."""
    from exchange.wire.envelope import open_envelope

    conn = postgres.connect(rt.node_dsn(code))
    try:
        with postgres.transaction(conn) as cur:
            cur.execute("SELECT body FROM outbox WHERE relay = %s ORDER BY id", (code,))
            bodies = [bytes(r[0]) for r in cur.fetchall()]
    finally:
        conn.close()
    keyring = rt.keyring()
    return [open_envelope(rt.store, keyring, b) for b in bodies]


def node_url(rt: Runtime, code: str) -> str:
    return rt.amqp_url(topology.node_user(code, rt.region.vhost))


def relay_until_drained(rt: Runtime, code: str, timeout: float = 60.0) -> None:
    """Run the node's relay until its outbox is empty (bounded)."""
    stop = threading.Event()
    relay = OutboxRelay(rt.node_dsn(code), node_url(rt, code), code)
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    conn = postgres.connect(rt.node_dsn(code))
    try:
        deadline = time.monotonic() + timeout
        while backlog(conn, code) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert backlog(conn, code) == 0, f"relay {code} left a backlog after {timeout} s"
    finally:
        conn.close()
        stop.set()
        thread.join(timeout=30)


def purge_registry_queue(rt: Runtime) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rt.amqp_url(None)))
    try:
        conn.channel().queue_purge(topology.REGISTRY_QUEUE)
    finally:
        conn.close()


def cli(rt: Runtime, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KPX), *args],
        input=stdin,
        env=rt.settings.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- operations


def test_issue_void_confirm_import_and_declare_production_each_commit_a_row_and_an_event(
    rt: Runtime,
) -> None:
    before = counts(rt, "BW")
    first, second = submit(rt, "BW", [issue(), issue()])
    assert first.ok and second.ok, (first, second)
    results = submit(
        rt,
        "BW",
        [
            json.dumps({"op": "void", "certificate_id": first.subject, "reason": "re-weighed",
                        "replaced_by": second.subject}),
            json.dumps({"op": "confirm_import", "certificate_id": "AE-DXB-2026-0042",
                        "issuing_participant": "AE", "received_on": "2026-11-22",
                        "parcels": 1, "carats": "250.00", "value_usd": "50000.00",
                        "seal_intact": True, "remarks": ""}),
            json.dumps({"op": "declare_production", "period": "2026-H1", "carats": "1200.00",
                        "value_usd": "250000.00", "producer": "BW-MINE-JWANENG"}),
        ],
    )  # fmt: skip
    assert [r.ok for r in results] == [True, True, True], [str(r) for r in results]
    assert [r.subject for r in results] == [
        first.subject, "AE-DXB-2026-0042", "2026-H1/BW-MINE-JWANENG"
    ]  # fmt: skip
    after = counts(rt, "BW")
    assert {t: after[t] - before[t] for t in TABLES} == {
        "certificates": 2, "node_events": 5, "outbox": 5,
        "import_confirmations": 1, "production": 1,
    }  # fmt: skip
    types = [e.event_type for e in outbox_events(rt, "BW")[-5:]]
    assert types == [
        "CertificateIssued", "CertificateIssued", "CertificateVoided", "ImportConfirmed",
        "ProductionDeclared",
    ]  # fmt: skip


def test_the_submit_command_prints_one_result_line_per_input_line_and_exits_0(
    rt: Runtime,
) -> None:
    lines_in = "\n".join([issue(destination="IN"), issue(destination="EU")]) + "\n"
    done = cli(rt, "node", "submit", "--member", "ZA", "-", stdin=lines_in)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ")[:2] for line in lines] == [["1", "ok"], ["2", "ok"]]
    assert lines[0].split(" ")[2].startswith("XS-ZA-2026-")


def test_the_submit_command_exits_1_and_names_the_reason_when_a_line_is_refused(
    rt: Runtime,
) -> None:
    done = cli(rt, "node", "submit", "--member", "ZA", "-",
               stdin=issue(destination="SO") + "\n" + issue() + "\n")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    refused, ok = done.stdout.splitlines()
    assert refused.startswith("1 refused NOT_A_PARTICIPANT ")
    assert "SO" in refused
    assert ok.startswith("2 ok XS-ZA-2026-")


MALFORMED = {
    "not JSON": ("{not json", "SCHEMA_INVALID", "not JSON"),
    "unknown op": (json.dumps({"op": "export", "certificate": {}}), "SCHEMA_INVALID", "export"),
    "missing field": (
        json.dumps({"op": "issue", "certificate": {
            k: v for k, v in certificate().items() if k != "exporter"}}),
        "SCHEMA_INVALID", "exporter",
    ),
    "bad decimal": (issue(carats="12,5"), "SCHEMA_INVALID", "carats"),
    "bad date": (issue(date_of_issue="2026-02-30"), "SCHEMA_INVALID", "date_of_issue"),
    "wrong HS code": (
        json.dumps({"op": "issue", "certificate": certificate(parcels=[{
            "parcel_no": 1, "hs_code": "7102.99", "carats": "1.00", "value_usd": "10.00"}])}),
        "INVALID_HS_CODE", "7102.99",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_line_is_refused_with_its_reason_and_the_other_lines_still_apply(
    rt: Runtime, kind: str
) -> None:
    bad, code, mentions = MALFORMED[kind]
    before = counts(rt, "NA")
    results = submit(rt, "NA", [issue(), bad, issue()])
    assert [r.ok for r in results] == [True, False, True], [str(r) for r in results]
    assert results[1].code == code, str(results[1])
    assert mentions in results[1].sentence, str(results[1])
    assert str(results[1]).startswith(f"2 refused {code} ")
    after = counts(rt, "NA")
    # exactly the two good lines' rows: the refused line left nothing half-written
    assert {t: after[t] - before[t] for t in TABLES} == {
        "certificates": 2, "node_events": 2, "outbox": 2,
        "import_confirmations": 0, "production": 0,
    }  # fmt: skip


def test_a_refused_line_in_a_chunk_of_many_leaves_the_store_exactly_as_the_good_lines_made_it(
    rt: Runtime,
) -> None:
    lines = [issue() if i % 7 else "[1, 2" for i in range(1, 1201)]
    before = counts(rt, "LS")
    results = submit(rt, "LS", lines)
    refused = [r.line for r in results if not r.ok]
    assert refused == [i for i in range(1, 1201) if i % 7 == 0]
    after = counts(rt, "LS")
    good = 1200 - len(refused)
    assert after["certificates"] - before["certificates"] == good
    assert after["outbox"] - before["outbox"] == good
    assert after["node_events"] - before["node_events"] == good


def test_sequence_numbers_in_the_outbox_envelopes_are_gap_free_from_1(rt: Runtime) -> None:
    submit(rt, "AO", [issue(), "oops", issue(destination="SO"), issue()])
    submit(rt, "AO", [issue() for _ in range(30)] + ["{}"])
    events = outbox_events(rt, "AO")
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len(events) == 32
    assert {e.producer for e in events} == {"AO"}
    assert len({e.event_id for e in events}) == 32


# --------------------------------------------------------------------------- relay


def test_the_relay_publishes_in_sequence_order_with_the_amqp_properties_a_router_needs(
    rt: Runtime,
) -> None:
    purge_registry_queue(rt)
    submit(rt, "CD", [issue() for _ in range(40)])
    relay_until_drained(rt, "CD")
    received = read_back(rt.amqp_url(None), topology.REGISTRY_QUEUE, rt.store, rt.keyring(),
                         expect=40, timeout=30, idle=1.0)  # fmt: skip
    assert [e.sequence for e in received.events] == list(range(1, 41))
    for (props, _), event in zip(received.messages, received.events, strict=True):
        assert props.message_id == event.event_id
        assert props.type == "CertificateIssued" == event.event_type
        assert props.user_id == topology.node_user("CD", rt.region.vhost)
        assert props.content_type == "application/vnd.apache.avro+binary"
        assert props.delivery_mode == 2


# --------------------------------------------------------------------------- broker permissions


def _channel(url: str) -> tuple[pika.BlockingConnection, Any]:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.confirm_delivery()
    return conn, channel


def _props(rt: Runtime, code: str) -> pika.BasicProperties:
    return pika.BasicProperties(
        user_id=topology.node_user(code, rt.region.vhost), delivery_mode=2, message_id="x"
    )


def test_the_broker_accepts_a_node_publishing_under_its_own_routing_key(rt: Runtime) -> None:
    conn, channel = _channel(node_url(rt, "ZW"))
    try:
        channel.basic_publish(topology.EVENTS, "ZW.CertificateIssued", b"x", _props(rt, "ZW"))
    finally:
        conn.close()


def test_the_broker_refuses_a_node_publishing_under_another_members_routing_key(
    rt: Runtime,
) -> None:
    conn, channel = _channel(node_url(rt, "ZW"))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(topology.EVENTS, "BW.CertificateIssued", b"x", _props(rt, "ZW"))
        assert refused.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()


def test_the_broker_refuses_a_node_setting_another_users_user_id(rt: Runtime) -> None:
    conn, channel = _channel(node_url(rt, "ZW"))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(topology.EVENTS, "ZW.CertificateIssued", b"x", _props(rt, "BW"))
        assert refused.value.reply_code == 406
    finally:
        if conn.is_open:
            conn.close()


def test_the_broker_refuses_a_node_publishing_to_the_registrys_notify_exchange(
    rt: Runtime,
) -> None:
    conn, channel = _channel(node_url(rt, "ZW"))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(topology.NOTIFY, "BW.RegistryDecision", b"x", _props(rt, "ZW"))
        assert refused.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()


def test_the_broker_refuses_a_node_reading_another_nodes_queue(rt: Runtime) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(node_url(rt, "ZW")))
    try:
        channel = conn.channel()
        assert channel.basic_get(topology.node_queue("ZW"), auto_ack=False) is not None
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_get(topology.node_queue("BW"), auto_ack=False)
        assert refused.value.reply_code == 403
    finally:
        if conn.is_open:
            conn.close()


# ------------------------------------------------------------ numbering in groups of issues


def za_certificate(**changes: Any) -> dict:
    cert = certificate("AE", date_of_issue="2025-01-10", date_of_expiry="2025-02-10",
                       origin={"type": "UNMIXED", "countries": ["ZA"]})  # fmt: skip
    cert["parcels"][0]["origin_country"] = "ZA"
    cert.update(changes)
    return cert


def test_a_number_stated_twice_in_one_submission_is_refused_the_second_time(rt: Runtime) -> None:
    from exchange.domain.certnumber import regional_number

    number = regional_number(rt.region.code, "ZA", 2025, 900)
    line = json.dumps({"op": "issue", "certificate": za_certificate(certificate_id=number)})
    results = submit(rt, "ZA", [line, line])
    assert results[0].ok and results[0].subject == number
    assert (results[1].ok, results[1].code) == (False, "DUPLICATE_CERTIFICATE")


def test_an_allocated_serial_already_stated_by_the_national_system_is_skipped(
    rt: Runtime,
) -> None:
    from exchange.domain.certnumber import regional_number

    taken = regional_number(rt.region.code, "ZA", 2025, 1)
    stated = json.dumps({"op": "issue", "certificate": za_certificate(certificate_id=taken)})
    unnumbered = json.dumps({"op": "issue", "certificate": za_certificate()})
    results = submit(rt, "ZA", [stated, unnumbered])
    assert [r.ok for r in results] == [True, True]
    assert results[1].subject == regional_number(rt.region.code, "ZA", 2025, 2)


def test_a_certificate_issued_and_voided_in_one_submission_is_voided(rt: Runtime) -> None:
    from exchange.domain.certnumber import regional_number

    number = regional_number(rt.region.code, "ZA", 2025, 901)
    results = submit(rt, "ZA", [
        json.dumps({"op": "issue", "certificate": za_certificate(certificate_id=number)}),
        json.dumps({"op": "void", "certificate_id": number, "reason": "shipment cancelled"}),
    ])  # fmt: skip
    assert [(r.ok, r.subject) for r in results] == [(True, number), (True, number)]


def test_an_operation_line_above_the_event_size_limit_is_refused(rt: Runtime) -> None:
    from exchange.wire.envelope import MAX_EVENT_BYTES

    huge = json.dumps(
        {"op": "issue", "certificate": certificate(issuing_authority="A" * MAX_EVENT_BYTES)}
    )
    before = counts(rt, "BW")
    [result] = submit(rt, "BW", [huge])
    assert (result.ok, result.code) == (False, "SCHEMA_INVALID")
    assert "at most" in result.sentence
    assert counts(rt, "BW") == before
