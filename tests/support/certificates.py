"""Certificates written straight into a registry database, as the registry stores accepted ones.

For the verification tests (test_registry_web_verify, test_verify_cache): the portal reads
these rows, not their history; no tests here.
"""

from __future__ import annotations

import uuid

from exchange.adapters.postgres import connect, transaction
from exchange.domain.certnumber import regional_number

_serial = iter(range(1, 1_000_000))


def add_certificate(dsn: str, state: str = "ISSUED", number: str | None = None) -> str:
    """A certificate of BW to ZA, valid 2026-03-01 to 2026-04-01; its number."""
    number = number or regional_number("XS", "BW", 2026, next(_serial))
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "INSERT INTO certificates (certificate_id, producer, issuing_participant,"
                " issuing_member, destination, scope, origin_type, origin_countries,"
                " date_of_issue, date_of_expiry, number_of_parcels, total_carats,"
                " total_value_usd, body, content_hash, state, event_id) VALUES (%s, 'BW', 'XS',"
                " 'BW', 'ZA', 'INTRA_REGIONAL', 'UNMIXED', '{BW}', '2026-03-01', '2026-04-01',"
                " 2, 100.50, 15000, '{}', '\\x00', %s, %s)",
                (number, state, str(uuid.uuid4())),
            )
    finally:
        conn.close()
    return number


def set_state(dsn: str, number: str, state: str) -> None:
    """``UPDATE certificates SET state`` in a connection (and transaction) of its own."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "UPDATE certificates SET state = %s WHERE certificate_id = %s", (state, number)
            )
    finally:
        conn.close()
