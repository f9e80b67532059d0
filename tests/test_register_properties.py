"""The reconciler's SQL validity predicate agrees with the pure register on random histories."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.domain.register import EntryKind, Register, RegisterEntry, Revocation
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
