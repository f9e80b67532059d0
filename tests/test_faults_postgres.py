"""Issue 11, item 5: only a failed connection is "database unavailable" (transient).

A program-limit error (an index row too large) fails the same way on every retry; mapped to
DatabaseUnavailable it made the consumer retry a poison batch for minutes.
"""

from __future__ import annotations

import random

import psycopg2
import pytest
from support.services import Database

from exchange.adapters.postgres import connect, transaction
from exchange.errors import DatabaseUnavailable


def test_an_index_row_too_large_is_no_transient_failure(database: Database) -> None:
    conn = connect(database.url)
    try:
        with transaction(conn) as cur:
            cur.execute("CREATE TABLE t (x text); CREATE INDEX ON t (x)")
        noise = "".join(random.Random(5).choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=100_000))
        with pytest.raises(psycopg2.Error) as raised, transaction(conn) as cur:
            cur.execute("INSERT INTO t VALUES (%s)", (noise,))
        assert not isinstance(raised.value, DatabaseUnavailable)
        assert raised.value.pgcode == "54000"  # program_limit_exceeded
    finally:
        conn.close()


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(DatabaseUnavailable):
        connect("postgresql://postgres@127.0.0.1:9/none")  # nothing listens on port 9
