"""Hostile input ends in a rejection or a dead letter with a reason; the registry keeps going.

One registry runs (in a thread, ``run_registry``) for the module, on a private copy of the
example region provisioned on the shared services (``kpx region init``: keys, users,
topology, databases). Each test publishes its hostile messages AS node broker users,
interleaved with valid certificates, then waits (bounded) until the registry recorded every
one of them, and checks that:

- every hostile message has a REJECTED row in ``event_log`` with a DESIGN §7 reason (the rows
  ``kpx registry rejections --json`` lists), and every body that is no envelope is also on the
  dead-letter queue with the reason in its ``x-kpx-reason`` header;
- every valid event sent in between is ACCEPTED exactly once, and its producer's node queue
  gets exactly one RegistryDecision about it;
- the registry thread is still running.

Identifiers and codes are rejected when hostile; free text (names, addresses, remarks) is
accepted and must come back byte for byte: an exporter may well be called O'Brien.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastavro
import pika
import pika.exceptions
import pytest
from pika.spec import BasicProperties
from support.region import provisioned_region
from support.registry import (
    Producers,
    Sealed,
    certificate,
    confirmation,
    issuance,
    voiding,
)
from support.services import unique_name

from exchange.adapters.postgres import connect, fetch_all
from exchange.app.runtime import Runtime
from exchange.domain.certificate import Certificate, HsCode
from exchange.domain.certnumber import regional_number
from exchange.domain.events import Decision, Outcome, ProductionDeclaration, each_event
from exchange.registry import deadmover
from exchange.registry.opening import digest_key
from exchange.registry.service import run_registry
from exchange.wire import topology
from exchange.wire.codec import HEADER_SIZE, MAGIC
from exchange.wire.envelope import open_envelope, seal
from exchange.wire.signing import generate_key

KPX = Path(sys.executable).with_name("kpx")
REASONS = frozenset({
    "SCHEMA_UNKNOWN", "SCHEMA_INVALID", "BAD_SIGNATURE", "UNKNOWN_PRODUCER", "ISSUER_MISMATCH",
    "BAD_CERTIFICATE_NUMBER", "DUPLICATE_CERTIFICATE", "NOT_A_PARTICIPANT",
    "PARTICIPANT_SUSPENDED", "INVALID_HS_CODE", "TOTALS_MISMATCH", "INVALID_DATES",
    "NON_POSITIVE_QUANTITY", "UNKNOWN_CERTIFICATE", "NOT_ALLOWED",
})  # fmt: skip
DECIDE_TIMEOUT = 60.0
FORGED_SEQUENCE = 10**9  # unauthentic messages never take a real sequence number (no gaps)
SQL = "'; DROP TABLE certificates; --"
QUOTES = 'O\'Brien "&" Sons \\ back\\slash %s %(x)s $1 ;'
LONG = "x" * 100_000


@dataclass(frozen=True)
class Sent:
    """One published message and the event_log key the registry files it under."""

    what: str
    key: str
    body: bytes
    valid: bool = False
    node: str = "BW"  # who is told the decision about a valid event


@dataclass
class Registry:
    """The provisioned region, the registry thread and what the tests sent."""

    rt: Runtime
    producers: Producers
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException]
    channels: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, list[Decision]] = field(default_factory=dict)
    serial: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))

    # -- publishing --

    def channel(self, user: str | None) -> Any:
        """A confirming channel as broker user ``user`` (None: the administrator)."""
        if user not in self.channels:
            conn = pika.BlockingConnection(pika.URLParameters(self.rt.amqp_url(user)))
            self.channels[user] = conn.channel()
            self.channels[user].confirm_delivery()
        return self.channels[user]

    def drop_channel(self, user: str | None) -> None:
        channel = self.channels.pop(user, None)
        if channel is not None and channel.connection.is_open:
            channel.connection.close()

    def user(self, code: str) -> str:
        return topology.node_user(code, self.rt.region.vhost)

    def publish(
        self, code: str, body: bytes, *, event_type: str = "CertificateIssued",
        message_id: str | None = None, user_id: str | None = None, routing_key: str | None = None,
    ) -> None:  # fmt: skip
        """Publish ``body`` as node ``code``'s broker user (its own routing key and user_id)."""
        user = self.user(code)
        props = BasicProperties(
            message_id=message_id or str(uuid.uuid4()), type=event_type,
            user_id=user_id or user, content_type="application/vnd.apache.avro+binary",
            delivery_mode=2,
        )  # fmt: skip
        key = routing_key or f"{code}.{event_type}"
        self.channel(user).basic_publish(topology.EVENTS, key, body, props)

    def send(self, sealed: Sealed, what: str, *, valid: bool = False) -> Sent:
        """Publish an authentic event as its producer; filed under its event id."""
        self.publish(sealed.producer, sealed.body, event_type=sealed.event_type,
                     message_id=sealed.event_id)  # fmt: skip
        return Sent(what, sealed.event_id, sealed.body, valid, sealed.producer)

    def forged(self, code: str, body: bytes, what: str, **kwargs: Any) -> Sent:
        """Publish bytes that are not an authentic event; filed under their digest."""
        self.publish(code, body, **kwargs)
        return Sent(what, digest_key(body), body)

    def fresh(self, member: str = "BW", **changes: Any) -> Certificate:
        return certificate(member, next(self.serial), **changes)

    def valid(self, member: str = "BW") -> Sent:
        """A valid certificate of ``member``, published: it must be accepted once."""
        return self.send(self.producers.seal(member, issuance(self.fresh(member))), "valid",
                         valid=True)  # fmt: skip

    # -- reading back --

    def query(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        conn = connect(self.rt.registry_dsn)
        try:
            return fetch_all(conn, sql, params)
        finally:
            conn.close()

    def rows(self, sent: list[Sent]) -> dict[str, dict[str, Any]]:
        """The event_log rows of ``sent``, by key."""
        found = self.query(
            "SELECT event_id::text AS key, decision, reason, detail, event_type FROM event_log "
            "WHERE event_id = ANY(%s::uuid[])",
            ([s.key for s in sent],),
        )
        return {r["key"]: r for r in found}

    def decided(self, sent: list[Sent], timeout: float = DECIDE_TIMEOUT) -> dict[str, Any]:
        """Wait until every message of ``sent`` has its event_log row; return the rows."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.thread.is_alive(), f"the registry stopped: {self.errors!r}"
            rows = self.rows(sent)
            missing = [s.what for s in sent if s.key not in rows]
            if not missing:
                return rows
            if time.monotonic() > deadline:
                pytest.fail(f"{len(missing)} messages not decided in {timeout:.0f} s: "
                            f"{Counter(missing).most_common(5)}")  # fmt: skip
            time.sleep(0.2)

    def node_decisions(self, code: str) -> list[Decision]:
        """Every RegistryDecision that reached ``kpx.node.<code>`` so far."""
        channel = self.channel(None)
        keyring = self.rt.keyring()
        while True:
            method, _, body = channel.basic_get(topology.node_queue(code), auto_ack=True)
            if method is None:
                break
            env = open_envelope(self.rt.store, keyring, body)
            for kind, decision in each_event(env.event_type, env.payload):
                if kind == "RegistryDecision":
                    self.decisions.setdefault(code, []).append(decision)  # type: ignore[arg-type]
        return self.decisions.get(code, [])

    def told_once(self, node: str, event_ids: set[str]) -> None:
        """Wait (bounded) until ``node`` was told each event was accepted; exactly once each.

        (Forged copies that claim a genuine event's id get rejections under that id; the node
        keeps the acceptance whatever the order, so only acceptances are counted.)
        """
        deadline = time.monotonic() + DECIDE_TIMEOUT
        while True:
            decisions = self.node_decisions(node)
            told = Counter(d.subject_event_id for d in decisions if d.decision is Outcome.ACCEPTED)
            if all(told[k] for k in event_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {k: told[k] for k in event_ids} == dict.fromkeys(event_ids, 1), node

    def dead_letters(self, expect: Collection[bytes] = ()) -> dict[bytes, str]:
        """Body -> reason of every dead letter so far, once those of ``expect`` are there.

        The running registry moves dead letters from their queue into its store a batch at
        a time (registry/deadmover.py): a body can be in its hands, neither in the queue nor
        stored yet, for a moment.
        """
        url = self.rt.amqp_url(topology.registry_user(self.rt.region.vhost))
        deadline = time.monotonic() + DECIDE_TIMEOUT
        while True:
            conn = connect(self.rt.registry_dsn)
            try:
                deadmover.move_waiting(conn, url)
            finally:
                conn.close()
            rows = self.query("SELECT body, reason FROM dead_letters")
            found = {bytes(r["body"]): r["reason"] for r in rows}
            if set(expect) <= found.keys() or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def check(self, sent: list[Sent], rows: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every hostile message rejected with a §7 reason, every valid one accepted once."""
        rows = rows or self.decided(sent)
        for s in sent:
            row = rows[s.key]
            if s.valid:
                assert row["decision"] == "ACCEPTED", (s.what, row)
            else:
                assert row["decision"] == "REJECTED", (s.what, row)
                assert row["reason"] in REASONS, (s.what, row)
        for node in {s.node for s in sent if s.valid}:
            self.told_once(node, {s.key for s in sent if s.valid and s.node == node})
        assert self.thread.is_alive(), f"the registry stopped: {self.errors!r}"
        return rows


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("hostile")
    with provisioned_region(tmp, unique_name(), amqp_admin_url, database_server_url) as rt:
        vhost, code = rt.region.vhost, rt.region.code
        signers = {c: rt.signer(c) for c in rt.region.node_codes}
        stop, errors = threading.Event(), []

        def target() -> None:
            try:
                run_registry(rt.registry_dsn, rt.amqp_url(topology.registry_user(vhost)),
                             rt.region, rt.store, rt.signer(code), stop)  # fmt: skip
            except BaseException as exc:
                errors.append(exc)
                raise

        thread = threading.Thread(target=target, name="registry-under-attack", daemon=True)
        thread.start()
        reg = Registry(rt, Producers(rt.store, signers), stop, thread, errors)
        try:
            yield reg
        finally:
            stop.set()
            thread.join(timeout=30)
            for user in list(reg.channels):
                reg.drop_channel(user)
        assert not thread.is_alive(), "the registry did not stop within 30 s"
        assert not errors, f"the registry failed: {errors!r}"


# --------------------------------------------------------------------------- bytes


def mutate(rng: random.Random, body: bytes) -> bytes:
    """One random corruption of ``body``: flip, overwrite, cut, insert, splice or reheader."""
    i = rng.randrange(len(body))
    kind = rng.randrange(6)
    if kind == 0:
        return body[:i] + bytes([body[i] ^ (1 << rng.randrange(8))]) + body[i + 1 :]
    if kind == 1:
        return body[:i] + rng.randbytes(rng.randint(1, 16)) + body[i + 16 :]
    if kind == 2:
        return body[:i]
    if kind == 3:
        return body[:i] + rng.randbytes(rng.randint(1, 64)) + body[i:]
    if kind == 4:
        j = rng.randrange(len(body))
        return body[:i] + body[j:]
    return MAGIC + rng.randbytes(8) + body[HEADER_SIZE:]


def test_random_and_mutated_bytes_are_rejected_and_valid_events_between_all_land(
    registry: Registry,
) -> None:
    rng = random.Random(7)  # seeded: a failure replays exactly
    bases = [registry.producers.seal("BW", issuance(registry.fresh()), sequence=FORGED_SEQUENCE)
             for _ in range(5)]  # fmt: skip
    sent: list[Sent] = []
    for n in range(300):
        if n % 25 == 0:
            sent.append(registry.valid())
        if n % 3 == 0:
            body = rng.randbytes(rng.randint(0, 3000))
        else:
            body = mutate(rng, rng.choice(bases).body)
            if any(body == b.body for b in bases):
                continue
        sent.append(registry.forged("BW", body, "fuzz-mutated" if n % 3 else "fuzz-random"))
    sent.append(registry.valid())
    rows = registry.check(sent)
    not_envelopes = {s.body for s in sent if rows[s.key]["detail"].startswith("not a kpx")}
    dead = registry.dead_letters(not_envelopes)
    assert not_envelopes <= dead.keys(), "a body that is no envelope is not dead-lettered"
    assert all(dead[b].split(":")[0] in REASONS for b in not_envelopes)
    reasons = Counter(rows[s.key]["reason"] for s in sent if not s.valid)
    valid = sum(s.valid for s in sent)
    print(f"\n[hostile] fuzz: {len(sent)} messages, {dict(reasons)}, "
          f"{len(not_envelopes)} dead-lettered, {valid} valid accepted")  # fmt: skip


def test_an_oversized_message_is_dead_lettered_with_a_reason(registry: Registry) -> None:
    rng = random.Random(10)
    big = [
        registry.forged("BW", rng.randbytes(10 * 1024 * 1024), "10 MB of random bytes"),
        registry.forged("BW", MAGIC + rng.randbytes(10 * 1024 * 1024), "10 MB behind the magic"),
    ]
    sent = [*big, registry.valid()]
    rows = registry.check(sent)
    dead = registry.dead_letters([s.body for s in big])
    for s in big:
        assert rows[s.key]["reason"] in ("SCHEMA_INVALID", "SCHEMA_UNKNOWN")
        assert dead.get(s.body, "").startswith(rows[s.key]["reason"])


# --------------------------------------------------------------------------- business content


class _RawPayload:
    """A schema store stand-in whose payload encoding is fixed bytes (to forge a payload)."""

    def __init__(self, store: Any, payload: bytes) -> None:
        self._store, self._payload = store, payload

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return self._store.encode(name, record) if name == "Envelope" else self._payload


def business_cases(reg: Registry) -> Iterator[tuple[str, Callable[[], Sent]]]:
    """(expected reason, a thunk that publishes one event) for every §7 family; an empty
    reason marks a valid event another case builds on."""
    p, fresh, store = reg.producers, reg.fresh, reg.rt.store

    def one(reason: str, code: str, payload: Any) -> tuple[str, Callable[[], Sent]]:
        return reason, lambda: reg.send(p.seal(code, payload), reason)

    def good(code: str, payload: Any) -> tuple[str, Callable[[], Sent]]:
        return "", lambda: reg.send(p.seal(code, payload), "builds on", valid=True)

    record = store.encode("CertificateIssued", issuance(fresh()).to_record())
    alien = MAGIC + b"\x01" * 8 + record[HEADER_SIZE:]
    other = store.encode("ImportConfirmed", confirmation(fresh()).to_record())
    for reason, payload in (("SCHEMA_UNKNOWN", alien), ("SCHEMA_INVALID", other)):
        yield reason, lambda r=reason, b=payload: reg.send(_signed_payload(reg, "BW", b), r)
    yield "SCHEMA_INVALID", lambda: reg.forged("BW", b"\x00garbage" * 5, "garbage")
    yield "UNKNOWN_PRODUCER", lambda: _as_admin(reg, issuance(fresh()))
    forged = p.seal("BW", issuance(fresh()), signer=p.signers["ZA"], sequence=FORGED_SEQUENCE)
    yield "BAD_SIGNATURE", lambda: reg.forged("BW", forged.body, "ZA's key")
    yield one("ISSUER_MISMATCH", "ZA", issuance(fresh("BW")))
    number = fresh().certificate_id
    mistyped = number[:-2] + ("01" if number.endswith("00") else "00")
    yield one("BAD_CERTIFICATE_NUMBER", "BW", issuance(fresh(certificate_id=mistyped)))
    twice = fresh()
    yield good("BW", issuance(twice))
    other_content = dataclasses.replace(twice, issuing_authority="Someone else")
    yield one("DUPLICATE_CERTIFICATE", "BW", issuance(other_content))
    yield one("NOT_A_PARTICIPANT", "BW", issuance(fresh(destination="SO")))
    yield one("PARTICIPANT_SUSPENDED", "BW", issuance(fresh(destination="CF")))
    odd = fresh()
    parcels = (dataclasses.replace(odd.parcels[0], hs_code=HsCode.UNKNOWN), *odd.parcels[1:])
    yield one("INVALID_HS_CODE", "BW", issuance(dataclasses.replace(odd, parcels=parcels)))
    yield one("TOTALS_MISMATCH", "BW", issuance(fresh(total_carats=Decimal("999.00"))))
    yield one("INVALID_DATES", "BW", issuance(fresh(date_of_expiry=date(2026, 2, 1))))
    yield one("NON_POSITIVE_QUANTITY", "ZA", confirmation(fresh(), carats=Decimal("0.00")))
    yield one("UNKNOWN_CERTIFICATE", "LS", voiding(fresh("LS")))  # LS has no sequence gap
    shipped = fresh()
    yield good("BW", issuance(shipped))
    yield good("ZA", confirmation(shipped))
    yield one("NOT_ALLOWED", "BW", voiding(shipped))


def _signed_payload(reg: Registry, code: str, payload: bytes) -> Sealed:
    """An authentic CertificateIssued envelope around arbitrary payload bytes."""
    sequence = reg.producers.sequences.get(code, 0) + 1
    reg.producers.sequences[code] = sequence
    stand_in: Any = _RawPayload(reg.rt.store, payload)
    signer = reg.producers.signers[code]
    event_id, body = seal(stand_in, signer, "CertificateIssued", {}, sequence)
    return Sealed(event_id, "CertificateIssued", code, sequence, body)


def _as_admin(reg: Registry, payload: Any) -> Sent:
    """The administrator, who is no node, publishes an envelope: no producer of the region."""
    sealed = reg.producers.seal("BW", payload, sequence=FORGED_SEQUENCE)
    admin = urlsplit(reg.rt.settings.amqp_url).username or "guest"
    props = BasicProperties(message_id=sealed.event_id, type=sealed.event_type,
                            user_id=admin, delivery_mode=2)  # fmt: skip
    reg.channel(None).basic_publish(topology.EVENTS, "BW.CertificateIssued", sealed.body, props)
    return Sent("UNKNOWN_PRODUCER", digest_key(sealed.body), sealed.body)


def test_valid_envelopes_with_bad_business_content_get_their_reason_code(
    registry: Registry,
) -> None:
    expected: dict[str, str] = {}
    sent: list[Sent] = []
    for reason, publish in business_cases(registry):
        item = publish()
        sent += [item, registry.valid()]
        if reason:
            expected[item.key] = reason
    rows = registry.check(sent)
    got = {key: rows[key]["reason"] for key in expected}
    assert got == expected
    assert set(expected.values()) == REASONS, "a §7 family is not exercised"


# --------------------------------------------------------------------------- replays, forgeries


def test_a_replayed_event_counts_once_and_a_reused_sequence_is_not_allowed(
    registry: Registry,
) -> None:
    p = registry.producers
    original = p.seal("NA", issuance(registry.fresh("NA")))
    first = registry.send(original, "original", valid=True)
    replays = [registry.send(original, "same bytes again") for _ in range(3)]
    reused = p.seal("NA", issuance(registry.fresh("NA")), sequence=original.sequence)
    refused = registry.send(reused, "same producer and sequence, another event id")
    later = registry.valid("NA")
    rows = registry.check([first, refused, later])
    assert rows[refused.key]["reason"] == "NOT_ALLOWED"
    logged = registry.query(
        "SELECT count(*) AS n FROM event_log WHERE event_id = %s", (original.event_id,)
    )
    assert logged == [{"n": 1}], "a replayed event was recorded twice"
    assert all(r.key == first.key for r in replays)


def test_forged_signatures_are_rejected_and_the_genuine_event_still_lands(
    registry: Registry,
) -> None:
    p = registry.producers
    genuine = p.seal("BW", issuance(registry.fresh()))
    body = genuine.body
    stranger = generate_key("BW")  # a key the registry never registered
    forgeries = [
        body[:-1] + bytes([body[-1] ^ 1]),  # the signature's last byte
        body[:-40] + bytes([body[-40] ^ 0x80]) + body[-39:],  # its middle
        body[:-64] + bytes(64),  # zeros
        p.seal("BW", issuance(registry.fresh()), signer=p.signers["ZA"],
               sequence=FORGED_SEQUENCE).body,  # another member's key
        p.seal("BW", issuance(registry.fresh()), signer=stranger,
               sequence=FORGED_SEQUENCE).body,  # an unregistered key
    ]  # fmt: skip
    sent = [registry.forged("BW", f, "forged", message_id=genuine.event_id) for f in forgeries]
    sent.append(registry.send(genuine, "genuine, after its forged copies", valid=True))
    rows = registry.check(sent)
    assert {rows[s.key]["reason"] for s in sent if not s.valid} == {"BAD_SIGNATURE"}


def test_a_member_cannot_publish_as_another_at_the_broker(registry: Registry) -> None:
    sealed = registry.producers.seal("ZA", issuance(registry.fresh("ZA")), sequence=FORGED_SEQUENCE)
    za, bw = registry.user("ZA"), registry.user("BW")
    attempts = {
        "user_id of another member": ({"user_id": za, "routing_key": "BW.CertificateIssued"}, 406),
        "routing key of another member": ({"routing_key": "ZA.CertificateIssued"}, 403),
    }
    for what, (kwargs, code) in attempts.items():
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            registry.publish("BW", sealed.body, message_id=sealed.event_id, **kwargs)
        assert refused.value.reply_code == code, what
        registry.drop_channel(bw)  # the broker closed the channel
    after = registry.valid()
    registry.check([after])  # the queue is in order: anything sent before is decided too
    leaked = registry.query(
        "SELECT 1 FROM event_log WHERE claimed_event_id = %s OR event_id = %s",
        (sealed.event_id, digest_key(sealed.body)),
    )
    assert leaked == [], "a message the broker refused reached the registry"


def test_a_member_claiming_another_in_the_envelope_is_rejected(registry: Registry) -> None:
    p = registry.producers
    genuine = p.seal("BW", issuance(registry.fresh()))
    claims = [
        # ZA replays BW's genuine signed bytes under its own broker user
        registry.forged("ZA", genuine.body, "BW's bytes from ZA", message_id=genuine.event_id),
        # ZA signs an envelope claiming BW with its own key
        registry.forged("ZA", p.seal("BW", issuance(registry.fresh()), signer=p.signers["ZA"],
                                     sequence=FORGED_SEQUENCE).body, "claims BW, ZA's key"),
    ]  # fmt: skip
    sent = [*claims, registry.send(genuine, "genuine", valid=True)]
    rows = registry.check(sent)
    assert {rows[s.key]["reason"] for s in claims} == {"BAD_SIGNATURE"}
    assert all("BW" in rows[s.key]["detail"] for s in claims)


# --------------------------------------------------------------------------- text fields


def _text_fields() -> dict[str, Callable[[Certificate, str], Certificate]]:
    """Every text field of a certificate, as a setter."""
    r = dataclasses.replace

    def party(side: str, name: str) -> Callable[[Certificate, str], Certificate]:
        return lambda c, v: r(c, **{side: r(getattr(c, side), **{name: v})})

    fields: dict[str, Callable[[Certificate, str], Certificate]] = {
        name: (lambda c, v, n=name: r(c, **{n: v}))
        for name in ("certificate_id", "issuing_participant", "issuing_member",
                     "issuing_authority", "destination")
    }  # fmt: skip
    for side in ("exporter", "importer"):
        for name in ("name", "address", "country", "licence_no"):
            fields[f"{side}.{name}"] = party(side, name)
    fields["origin.countries"] = lambda c, v: r(c, origin=r(c.origin, countries=(v,)))
    fields["parcels.origin_country"] = lambda c, v: r(
        c, parcels=(r(c.parcels[0], origin_country=v), *c.parcels[1:])
    )
    fields["container.container_id"] = lambda c, v: r(c, container=r(c.container, container_id=v))
    fields["container.seal_numbers"] = lambda c, v: r(
        c, container=r(c.container, seal_numbers=(v, "S-2"))
    )
    fields["lawful_import_evidence"] = lambda c, v: r(c, lawful_import_evidence=(v,))
    return fields


TABLES = ("certificates", "parcels", "event_log", "certificate_history", "import_confirmations",
          "producer_sequences", "participants", "authority_keys", "outbox")  # fmt: skip


@pytest.mark.parametrize(
    "value", [SQL, QUOTES, LONG, "nul\x00byte"], ids=["sql", "quotes", "100kB", "nul"]
)
def test_sql_metacharacters_and_long_strings_in_every_text_field_are_decided_safely(
    registry: Registry, value: str
) -> None:
    before = _counts(registry)
    sent, certs = [], {}
    for name, set_field in _text_fields().items():
        cert = set_field(registry.fresh(), value)
        item = registry.send(registry.producers.seal("BW", issuance(cert)), name)
        sent += [item, registry.valid()]
        certs[item.key] = cert
    rows = registry.decided(sent)
    outcomes = {s.what: rows[s.key]["reason"] or "accepted" for s in sent if s.key in certs}
    for s in sent:
        row = rows[s.key]
        assert row["decision"] in ("ACCEPTED", "REJECTED"), (s.what, row)
        assert row["decision"] == "ACCEPTED" or row["reason"] in REASONS, (s.what, row)
        if s.key in certs and row["decision"] == "ACCEPTED":  # stored byte for byte
            stored = registry.query("SELECT body FROM certificates WHERE event_id = %s", (s.key,))
            assert stored == [{"body": certs[s.key].to_json()}], s.what
    registry.check([s for s in sent if s.valid])
    after = _counts(registry)
    assert all(after[t] >= before[t] for t in TABLES), (before, after)
    accepted = sum(rows[s.key]["decision"] == "ACCEPTED" for s in sent)
    assert after["certificates"] - before["certificates"] == accepted
    print(f"\n[hostile] {value[:12]!r}: {outcomes}")


def _counts(registry: Registry) -> dict[str, int]:
    """Row counts of the registry's tables (which must all still exist)."""
    return {t: int(registry.query(f"SELECT count(*) AS n FROM {t}")[0]["n"]) for t in TABLES}


def test_every_rejection_is_listed_by_kpx_registry_rejections(registry: Registry) -> None:
    rt = registry.rt
    registry.check([registry.forged("BW", b"\x00 not an envelope", "garbage"), registry.valid()])
    env = {"KPX_STATE_DIR": str(rt.settings.state_dir), "KPX_AMQP_URL": rt.settings.amqp_url,
           "KPX_DATABASE_URL": rt.settings.database_url, "PATH": ""}  # fmt: skip
    result = subprocess.run(
        [str(KPX), "--region", str(rt.settings.region_path), "registry", "rejections", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    rejected = registry.query(
        "SELECT COALESCE(claimed_event_id, event_id)::text AS id, reason FROM event_log "
        "WHERE decision = 'REJECTED'"
    )
    assert rejected
    assert Counter((r["event_id"], r["reason"]) for r in listed) == Counter(
        (r["id"], r["reason"]) for r in rejected
    )


def test_a_nul_in_the_envelope_producer_is_rejected_with_a_reason(registry: Registry) -> None:
    p = registry.producers
    claims = p.seal("BW\x00", issuance(registry.fresh()), signer=p.signers["BW"],
                    sequence=FORGED_SEQUENCE)  # fmt: skip
    sent = [registry.forged("BW", claims.body, "producer BW\\x00"), registry.valid()]
    rows = registry.check(sent)
    assert rows[sent[0].key]["reason"] == "BAD_SIGNATURE"


def test_a_validly_signed_event_above_the_size_limit_is_rejected_and_set_aside(
    registry: Registry,
) -> None:
    from exchange.wire.envelope import MAX_EVENT_BYTES

    cert = replace(registry.fresh(), issuing_authority="A" * (MAX_EVENT_BYTES + 1))
    sealed = registry.producers.seal("BW", issuance(cert))
    registry.send(sealed, "1 MiB authority")
    # Set aside before it is read, it is filed like any unreadable message: by its digest.
    big = Sent("1 MiB authority", digest_key(sealed.body), sealed.body)
    sent = [big, registry.valid()]
    rows = registry.check(sent)
    assert rows[big.key]["reason"] == "SCHEMA_INVALID"
    assert "above the limit" in rows[big.key]["detail"]
    assert registry.dead_letters([big.body]).get(big.body, "").startswith("SCHEMA_INVALID")


# --------------------------------------------------------------------------- issue 11: limits


class _Unchecked:
    """A schema store stand-in that writes the envelope without kpx's own checks (a uuid
    event_id among them), as a hostile producer's own Avro writer would."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        if name != "Envelope":
            return bytes(self._store.encode(name, record))
        entry = self._store._entry(name)
        out = io.BytesIO(entry.header)
        out.seek(0, io.SEEK_END)
        fastavro.schemaless_writer(out, entry.writing, record)
        return out.getvalue()


def _sealed_as(reg: Registry, code: str, payload: Any, *, sequence: int | None = None,
               event_id: str | None = None,
               produced_at: datetime | None = None) -> Sealed:  # fmt: skip
    """An authentic event of ``code`` with a chosen sequence number or event id."""
    p = reg.producers
    if sequence is None:
        sequence = p.sequences.get(code, 0) + 1
        p.sequences[code] = sequence
    kind = type(payload).EVENT_TYPE
    signer = p.signers[code]
    store: Any = _Unchecked(reg.rt.store)
    event_id, body = seal(store, signer, kind, payload.to_record(), sequence,
                          event_id=event_id, produced_at=produced_at)  # fmt: skip
    return Sealed(event_id, kind, code, sequence, body)


def test_a_poison_event_is_rejected_alone_and_its_batch_commits(registry: Registry) -> None:
    """Item 5: a 100 kB certificate_id in a void or a confirmation (an index row too large
    for PostgreSQL) is rejected with a reason; the valid events prefetched with it land."""
    rng = random.Random(11)  # letters that do not compress below PostgreSQL's index row limit
    noise = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", k=100_000))
    huge = dataclasses.replace(registry.fresh(), certificate_id=noise)
    poison = [
        registry.send(registry.producers.seal("BW", voiding(huge)), "100 kB void"),
        registry.send(registry.producers.seal("ZA", confirmation(huge)), "100 kB confirmation"),
    ]
    sent = [*poison]
    for _ in range(4):
        za = issuance(registry.fresh("ZA", destination="BW"))
        sent += [
            registry.valid(),
            registry.send(registry.producers.seal("ZA", za), "valid", valid=True),
        ]
    rows = registry.check(sent, registry.decided(sent, timeout=20))
    for s in poison:
        assert rows[s.key]["reason"] == "SCHEMA_INVALID"
        assert "at most 100" in rows[s.key]["detail"]
    told = {d.subject_event_id: d for d in registry.node_decisions("ZA")}
    assert told[poison[1].key].decision is Outcome.REJECTED, "the producer is not answered"


def test_an_event_id_that_is_no_uuid_is_rejected_with_a_reason(registry: Registry) -> None:
    """Item 9: not INTERNAL_ERROR on the dead-letter queue with no answer."""
    odd = [
        _sealed_as(registry, "BW", issuance(registry.fresh()), event_id=text)
        for text in ("not-a-uuid", str(uuid.uuid4()).upper(), "x" * 300)
    ]
    # filed under the uuid it spells, else under the digest of its bytes
    keys = [str(uuid.UUID(s.event_id)) if i == 1 else digest_key(s.body) for i, s in enumerate(odd)]
    sent = [Sent(f"event_id {s.event_id[:12]}", k, s.body) for s, k in zip(odd, keys, strict=True)]
    for s in odd:  # a broker property holds at most 255 bytes: the message_id is another
        registry.publish("BW", s.body, event_type=s.event_type)
    sent.append(registry.valid())
    rows = registry.check(sent, registry.decided(sent, timeout=20))
    assert {rows[s.key]["reason"] for s in sent if not s.valid} == {"SCHEMA_INVALID"}
    answered = {
        d.subject_event_id for d in registry.node_decisions("BW") if d.decision is Outcome.REJECTED
    }
    assert {s.key for s in sent[:3]} <= answered, "the producer got no answer"


def test_out_of_bounds_sequence_numbers_are_rejected_without_opening_gaps(
    registry: Registry,
) -> None:
    """Item 7: 0 and negative numbers, and jumps to 2**62 or by 10**6, are rejected; no gap
    row is written for them and the producer's later events land."""
    code = "NA"
    registry.check([registry.valid(code)])  # the producer has a high water
    high = registry.producers.sequences[code]
    gaps_before = registry.query(
        "SELECT count(*) AS n FROM sequence_gaps WHERE producer = %s", (code,)
    )
    numbers = (0, -5, 2**62, high + 10**6)
    bad = [_sealed_as(registry, code, issuance(registry.fresh(code)), sequence=n) for n in numbers]
    sent = [registry.send(s, f"sequence {s.sequence}") for s in bad]
    sent += [registry.valid(code), registry.valid(code)]
    rows = registry.check(sent, registry.decided(sent, timeout=20))
    assert [rows[s.key]["reason"] for s in sent[:4]] == [
        "SCHEMA_INVALID", "SCHEMA_INVALID", "NOT_ALLOWED", "NOT_ALLOWED",
    ]  # fmt: skip
    gaps_after = registry.query(
        "SELECT count(*) AS n FROM sequence_gaps WHERE producer = %s", (code,)
    )
    assert gaps_after == gaps_before, "an out-of-bounds number opened gaps"
    used = registry.query(
        "SELECT count(*) AS n FROM producer_sequences WHERE producer = %s AND sequence < 1",
        (code,),
    )
    assert used == [{"n": 0}]


def _dated(reg: Registry, year: int) -> Certificate:
    """A certificate of BW issued in ``year`` (its number carries that year)."""
    number = regional_number("XS", "BW", year, next(reg.serial))
    return reg.fresh(certificate_id=number, date_of_issue=date(year, 1, 1),
                     date_of_expiry=date(year, 2, 1))  # fmt: skip


def test_implausible_periods_dates_and_magnitudes_are_rejected(registry: Registry) -> None:
    """Item 8: a year 0 period, a produced_at in year 1 or 9999, a date of issue in year 1,
    and 9999999999999999.99 ct are refused with a reason instead of poisoning the figures."""
    huge = Decimal("9999999999999999.99")
    cert = registry.fresh()
    rest = sum((p.carats for p in cert.parcels[1:]), Decimal(0))
    big = (dataclasses.replace(cert.parcels[0], carats=huge - rest), *cert.parcels[1:])
    total = huge
    cases: list[tuple[str, str, Any, datetime | None]] = [
        ("SCHEMA_INVALID", "BW", ProductionDeclaration("BW", "0000-H1", "MINE-1",
                                                       Decimal("1.00"), Decimal("1.00")), None),
        ("SCHEMA_INVALID", "BW", ProductionDeclaration("BW", "2026-H1", "MINE-1", huge,
                                                       Decimal("1.00")), None),
        ("SCHEMA_INVALID", "ZA", confirmation(registry.fresh(), carats=huge), None),
        ("SCHEMA_INVALID", "BW", issuance(dataclasses.replace(cert, parcels=big,
                                                              total_carats=total)), None),
        *(("INVALID_DATES", "BW", issuance(_dated(registry, year)), None) for year in (1000, 9999)),
        ("INVALID_DATES", "BW", issuance(registry.fresh()), datetime(1, 1, 1, tzinfo=UTC)),
        ("INVALID_DATES", "BW", issuance(registry.fresh()), datetime(9999, 1, 1, tzinfo=UTC)),
    ]  # fmt: skip
    sent: list[Sent] = []
    expected: dict[str, str] = {}
    for reason, code, payload, produced_at in cases:
        sealed = _sealed_as(registry, code, payload, produced_at=produced_at)
        item = registry.send(sealed, f"{reason} {type(payload).__name__}")
        expected[item.key] = reason
        sent += [item, registry.valid()]
    rows = registry.check(sent, registry.decided(sent, timeout=20))
    assert {k: rows[k]["reason"] for k in expected} == expected


def test_the_same_fact_under_new_event_ids_counts_once(registry: Registry) -> None:
    """Item 3: a confirmation re-sent under fresh event ids is the duplicate it is (a second,
    different one is still recorded: DUPLICATE_IMPORT is the reconciler's); a declaration
    re-sent or revised for the same member, producer and period replaces the figure."""
    p = registry.producers
    shipped = registry.fresh()
    first = registry.send(p.seal("BW", issuance(shipped)), "shipped", valid=True)
    confirm = confirmation(shipped, carats=shipped.total_carats)
    again = [registry.send(p.seal("ZA", confirm), "same confirmation", valid=True)
             for _ in range(6)]  # fmt: skip
    second = confirmation(shipped, received_on=date(2026, 3, 20))
    other = registry.send(p.seal("ZA", second), "another confirmation", valid=True)
    producer = f"MINE-{uuid.uuid4().hex[:8]}"
    declare = [ProductionDeclaration("BW", "2026-H1", producer, Decimal(c), Decimal("1000.00"))
               for c in ("300.00", "300.00", "300.00", "250.00")]  # fmt: skip
    declared = [registry.send(p.seal("BW", d), "declaration", valid=True) for d in declare]
    registry.check([first, *again, other, *declared])
    rows = registry.query(
        "SELECT received_on FROM import_confirmations WHERE certificate_id = %s "
        "ORDER BY received_on",
        (shipped.certificate_id,),
    )
    assert [r["received_on"] for r in rows] == [date(2026, 3, 10), date(2026, 3, 20)]
    current = registry.query(
        "SELECT event_id::text AS id, carats FROM production WHERE producer_id = %s "
        "AND superseded_by IS NULL",
        (producer,),
    )
    assert current == [{"id": declared[-1].key, "carats": Decimal("250.00")}]


def test_a_date_of_issue_in_the_future_is_invalid_dates_with_a_day_of_slack(
    registry: Registry,
) -> None:
    """Item 13: a certificate dated after the day its node applied it is refused."""
    today = datetime.now(UTC).date()

    def dated(day: date) -> Certificate:
        number = regional_number("XS", "BW", day.year, next(registry.serial))
        return registry.fresh(certificate_id=number, date_of_issue=day,
                              date_of_expiry=day + timedelta(days=30))  # fmt: skip

    future = registry.send(
        registry.producers.seal("BW", issuance(dated(today + timedelta(days=3)))), "in 3 days"
    )
    slack = registry.send(
        registry.producers.seal("BW", issuance(dated(today + timedelta(days=1)))),
        "tomorrow (time zones)",
        valid=True,
    )
    rows = registry.check([future, slack, registry.valid()])
    assert rows[future.key]["reason"] == "INVALID_DATES"
    assert "in the future" in rows[future.key]["detail"]


def test_a_node_cannot_forge_dead_letters(registry: Registry) -> None:
    """Item 10: kpx.dead is re-injected by the registry as its own user; no node writes it."""
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        props = BasicProperties(headers={"x-kpx-reason": "SCHEMA_INVALID: forged"})
        registry.channel(registry.user("BW")).basic_publish(
            topology.DEAD, "ZA.CertificateIssued", b"forged", props
        )
    assert refused.value.reply_code == 403
    registry.drop_channel(registry.user("BW"))
    assert b"forged" not in registry.dead_letters()


def test_held_voids_are_bounded_per_producer(registry: Registry) -> None:
    """Item 6: past [policy] max_held_events a void waiting for a gap is rejected with a
    reason; the held ones are decided when the gap closes."""
    code, limit = "ZW", registry.rt.region.policy.max_held_events
    p = registry.producers
    registry.check([registry.valid(code)])
    missing = p.seal(code, issuance(registry.fresh(code)))  # held back: the gap
    voids = [registry.send(p.seal(code, voiding(registry.fresh(code))), "parked")
             for _ in range(limit + 1)]  # fmt: skip
    rows = registry.decided(voids[-1:], timeout=60)
    assert rows[voids[-1].key]["reason"] == "UNKNOWN_CERTIFICATE"
    assert "waiting for its missing events" in rows[voids[-1].key]["detail"]
    held = registry.query(
        "SELECT count(*) AS n FROM event_log WHERE decision = 'HELD' AND producer = %s", (code,)
    )
    assert held == [{"n": limit}]
    registry.send(missing, "the gap closes", valid=True)
    rows = registry.decided(voids, timeout=60)
    deadline = time.monotonic() + DECIDE_TIMEOUT
    while (
        registry.query("SELECT 1 FROM event_log WHERE decision = 'HELD' AND producer = %s", (code,))
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    released = registry.rows(voids)
    assert {r["reason"] for r in released.values()} == {"UNKNOWN_CERTIFICATE"}
