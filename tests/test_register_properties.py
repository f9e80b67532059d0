"""The reconciler's SQL validity predicate agrees with the pure register on random histories."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.registry import certificate

from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.domain.certificate import HsCode, Parcel, Party
from exchange.domain.register import (
    EntryKind,
    Register,
    RegisterEntry,
    Revocation,
    unlicensed_exporter,
    unregistered_parcel,
)
from exchange.reconciler import register_checks
from exchange.reconciler.register_checks import VALID
from exchange.registry import register as register_store

BASE = date(2026, 1, 1)
IDS = ("BW-A", "BW-B")
LICENCES = ("L1", "L2")

days = st.integers(min_value=0, max_value=40)
add = st.tuples(
    st.just("add"), st.sampled_from(IDS), st.sampled_from(LICENCES), days,
    st.one_of(st.none(), days),
)  # fmt: skip
revoke = st.tuples(st.just("revoke"), st.sampled_from(IDS), days)
histories = st.lists(st.one_of(add, revoke), max_size=8)
questions = st.lists(
    st.tuples(st.sampled_from(IDS), st.sampled_from(LICENCES), days, days), min_size=1, max_size=12
)

DURING = f"""
SELECT EXISTS (SELECT 1 FROM register_entries v WHERE v.member = 'BW' AND v.entry_id = q.id
               AND {VALID.format(a="q.a", b="q.b")}),
       EXISTS (SELECT 1 FROM register_entries v WHERE v.member = 'BW' AND v.kind = 'EXPORTER'
               AND v.licence_no = q.licence AND {VALID.format(a="q.a", b="q.a")})
FROM unnest(%s::text[], %s::text[], %s::date[], %s::date[]) WITH ORDINALITY q(id, licence, a, b, n)
ORDER BY q.n
"""


@pytest.fixture(scope="module")
def db(make_session_database: Any) -> Iterator[Connection]:
    database = make_session_database()
    conn = connect(database.url)
    migrate(conn, "exchange.registry")
    migrate(conn, "exchange.reconciler")  # the checks insert their findings there
    yield conn
    conn.close()


def day(offset: int) -> date:
    return BASE + timedelta(days=offset)


def build(history: list[tuple[Any, ...]]) -> list[RegisterEntry | Revocation]:
    events: list[RegisterEntry | Revocation] = []
    for item in history:
        if item[0] == "add":
            _, entry_id, licence, start, length = item
            until = None if length is None else day(start + length)
            events.append(
                RegisterEntry("BW", EntryKind.EXPORTER, entry_id, "x", licence, day(start), until)
            )
        else:
            events.append(Revocation("BW", item[1], day(item[2]), "r"))
    return events


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories, asked=questions)
def test_the_sql_validity_predicate_agrees_with_the_pure_register(
    db: Connection, history: list[tuple[Any, ...]], asked: list[tuple[str, str, int, int]]
) -> None:
    events = build(history)
    pure = Register()
    for event in events:
        (pure.add if isinstance(event, RegisterEntry) else pure.revoke)(event)  # type: ignore[operator]
    firsts = [day(min(a, b)) for _, _, a, b in asked]
    lasts = [day(max(a, b)) for _, _, a, b in asked]
    with transaction(db) as cur:
        cur.execute("TRUNCATE register_entries, register_revocations")
        register_store.write(cur, [(e, str(uuid.uuid4())) for e in events])
        cur.execute(DURING, ([q[0] for q in asked], [q[1] for q in asked], firsts, lasts))
        sql = [(bool(a), bool(b)) for a, b in cur.fetchall()]
    expected = [
        (pure.valid_during("BW", q[0], first, last), pure.licensed_exporter("BW", q[1], first))
        for q, first, last in zip(asked, firsts, lasts, strict=True)
    ]
    assert sql == expected


KINDS = {
    "BW-A": EntryKind.EXPORTER,
    "BW-B": EntryKind.MINE,
    "BW-C": EntryKind.ARTISANAL_COOPERATIVE,
}
certs = st.lists(
    st.tuples(st.sampled_from(LICENCES), days, st.sampled_from([None, "BW-A", "BW-B", "BW-C"])),
    min_size=1, max_size=6,
)  # fmt: skip
typed = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(sorted(KINDS)), st.sampled_from(LICENCES),
                  days, st.one_of(st.none(), days)),
        revoke,
    ),
    max_size=8,
)  # fmt: skip


def store_certificates(cur: Any, certificates: list[Any]) -> None:
    cur.execute("TRUNCATE certificates, parcels")  # no foreign key since sql/009
    for c in certificates:
        cur.execute(
            "INSERT INTO certificates (certificate_id, producer, issuing_participant,"
            " issuing_member, destination, scope, origin_type, origin_countries, date_of_issue,"
            " date_of_expiry, number_of_parcels, total_carats, total_value_usd, body,"
            " content_hash, state, event_id) VALUES (%s, 'BW', 'XS', 'BW', 'ZA', 'x', 'x',"
            " '{}', %s, %s, 1, 1, 1, %s, '\\x00', 'ISSUED', %s)",
            (c.certificate_id, c.date_of_issue, c.date_of_expiry, json.dumps(c.to_json()),
             str(uuid.uuid4())),
        )  # fmt: skip
        for p in c.parcels:
            cur.execute(
                "INSERT INTO parcels VALUES (%s, %s, '7102.31', 1, 1, 'BW', %s)",
                (c.certificate_id, p.parcel_no, p.producer_id),
            )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=typed, issued=certs)
def test_the_reconcilers_register_queries_agree_with_the_pure_rules(
    db: Connection, history: list[tuple[Any, ...]], issued: list[tuple[str, int, str | None]]
) -> None:
    events = [
        replace(e, kind=KINDS[e.entry_id]) if isinstance(e, RegisterEntry) else e
        for e in build(history)
    ]
    pure = Register()
    for event in events:
        (pure.add if isinstance(event, RegisterEntry) else pure.revoke)(event)  # type: ignore[operator]
    certificates = [
        replace(
            certificate("BW", n + 1, date_of_issue=day(offset),
                        date_of_expiry=day(offset) + timedelta(days=30)),
            exporter=Party("E", "A", "BW", licence),
            parcels=(Parcel(1, HsCode.HS_7102_31, Decimal(1), Decimal(1), "BW", producer),),
            number_of_parcels=1, total_carats=Decimal(1), total_value_usd=Decimal(1),
        )
        for n, (licence, offset, producer) in enumerate(issued)
    ]  # fmt: skip
    with transaction(db) as cur:
        cur.execute("TRUNCATE register_entries, register_revocations, recon.discrepancies CASCADE")
        register_store.write(cur, [(e, str(uuid.uuid4())) for e in events])
        store_certificates(cur, certificates)
        params = {"as_of": day(400), "run": 1}
        returning = " RETURNING certificate_id"  # what each check stored
        cur.execute(register_checks.UNLICENSED + returning, params)
        sql_unlicensed = {r[0] for r in cur.fetchall()}
        cur.execute(register_checks.UNREGISTERED_PARCELS + returning, params)
        sql_unregistered = {r[0] for r in cur.fetchall()}
    keeps_exporters = any(k[1] == "BW-A" for k in pure.versions)
    assert sql_unlicensed == {
        c.certificate_id for c in certificates if keeps_exporters and unlicensed_exporter(c, pure)
    }
    assert sql_unregistered == {
        c.certificate_id for c in certificates if unregistered_parcel(c, pure)
    }
