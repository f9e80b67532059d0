"""Issue 11, items 3 and 8 on the reconciler's side.

Item 8: one implausible row stored before the rules bounded periods must not
switch reconciliation off. Before: a ``0000-H1`` declaration made every ``kpx reconcile
--as-of`` die with "year 0 is out of range". Now the row is logged and skipped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from support.services import Database

from exchange.adapters.postgres import Connection, connect, fetch_all, migrate, transaction
from exchange.domain.region import load_region
from exchange.reconciler import deadline_checks, service, store
from exchange.wire.codec import default_store
from exchange.wire.envelope import open_envelope, seal
from exchange.wire.signing import Keyring, generate_key

REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"


@pytest.fixture
def db(database: Database) -> Iterator[Connection]:
    conn = connect(database.url)
    migrate(conn, "exchange.registry")
    service.prepare(database.url)
    yield conn
    conn.close()


def test_reconcile_skips_a_row_with_an_unreadable_period_and_goes_on(
    db: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with transaction(db) as cur:
        for period, carats in (("0000-H1", "10.00"), ("2026-H1", "5.00")):
            cur.execute(
                "INSERT INTO recon.production (event_id, participant, period, producer_id, "
                "carats, value_usd) VALUES (%s, 'BW', %s, 'MINE-1', %s, 100)",
                (str(uuid.uuid4()), period, carats),
            )
    ctx = service.context(load_region(REGION_FILE), default_store(), generate_key("XS-RECONCILER"))
    summary = deadline_checks.reconcile(db, ctx, date(2026, 12, 31))
    assert summary.run_id > 0
    assert any("0000-H1" in r.getMessage() for r in caplog.records), "the row is not reported"


def test_a_revised_declaration_replaces_the_reconcilers_figure(db: Connection) -> None:
    """Items 2-3: the reconciler's production counts the latest declaration, not the sum."""
    codec = default_store()
    bw = generate_key("BW")
    keyring = Keyring([bw.verify_key])
    ctx = service.context(load_region(REGION_FILE), codec, generate_key("XS-RECONCILER"))
    bodies = [
        seal(codec, bw, "ProductionDeclared", {"participant": "BW", "period": "2026-H1",
             "producer_id": "MINE-1", "carats": Decimal(c), "value_usd": Decimal("10.00")}, n)[1]
        for n, c in enumerate(("300.00", "300.00", "250.00"), start=1)
    ]  # fmt: skip
    for body in bodies:  # one batch each, as the registry republishes them
        with transaction(db) as cur:
            store.apply_batch(cur, ctx, [open_envelope(codec, keyring, body)], date(2026, 7, 1))
    rows = fetch_all(db, "SELECT carats FROM recon.production WHERE participant = 'BW'")
    assert rows == [{"carats": Decimal("250.00")}]
