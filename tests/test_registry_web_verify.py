"""The public verification API on its own portal servers: limit, bound, freshness, headers.

Each test serves the portal's real app (``exchange.registry.web.app.build``, as ``kpx registry
serve`` runs it) with uvicorn on a free port, on a private database migrated as the registry's,
with the settings it needs (a tight rate limit, one verification connection), so that driving
one server to its limits starves no other test. Clients are told apart by their source address
(127.0.0.2, 127.0.0.3, … on the loopback), as the portal tells them apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from typing import Any

import httpx
import psycopg2
import pytest
from support.certificates import add_certificate, set_state
from support.portal import served
from support.registry import region_for

from exchange.adapters.postgres import connect
from exchange.domain.certnumber import regional_number
from exchange.registry import service
from exchange.registry.web.lookups import Lookups
from exchange.registry.web.portal import Limits, Portal
from exchange.registry.web.reads import PublicPool
from exchange.web.security import SECURITY_HEADERS
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key

TODAY = date(2026, 3, 10)
Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="module")
def dsn(make_session_database: Any) -> str:
    url: str = make_session_database().url
    conn = connect(url)
    try:
        service.prepare_database(conn, region_for("kpx-verify-tests"))
    finally:
        conn.close()
    return url


@pytest.fixture
def serve(dsn: str) -> Serve:
    """``serve(limits=…, connections=…, wait_seconds=…)``: a portal server; yields its URL."""

    @contextmanager
    def running(
        limits: Limits | None = None, connections: int = 4, wait_seconds: float = 2.0
    ) -> Iterator[str]:
        portal = Portal(
            region=region_for("kpx-verify-tests"), schemas=default_store(),
            signer=lambda: generate_key("XS"), amqp_url=lambda: "", broker_user="",
            lookups=Lookups(dsn, connections, wait_seconds, statement_timeout_ms=1500),
            public=PublicPool(dsn, 1, read_only=True), work=PublicPool(dsn, 1),
            limits=limits or Limits(verify_rate=1000, verify_burst=1000), today=lambda: TODAY,
        )  # fmt: skip
        with served(portal) as url:
            yield url

    return running


def at_once(urls: list[str]) -> list[httpx.Response]:
    """GET every URL, 20 at a time, each on its own connection; the answers in order."""
    # Threads, not asyncio: the browser tests of the same session leave an event loop running.
    with ThreadPoolExecutor(20) as pool:
        return list(pool.map(lambda url: httpx.get(url, timeout=30), urls))


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def test_a_client_past_its_limit_gets_429_and_other_clients_are_not_affected(
    dsn: str, serve: Serve
) -> None:
    number = add_certificate(dsn)
    # A burst of 3, then a token every 100 s: the fourth lookup is refused whatever the pace.
    with serve(Limits(verify_rate=0.01, verify_burst=3)) as url, client_from("127.0.0.2") as a:
        api = f"{url}/api/v1/verify/{number}"
        assert [a.get(api).status_code for _ in range(3)] == [200, 200, 200]
        refused = a.get(api)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json() == {
            "type": "about:blank", "title": "Too many lookups", "status": 429,
            "detail": "Wait a few seconds and try again.",
        }  # fmt: skip
        assert refused.headers["x-frame-options"] == "DENY"
        # The page shares the client's bucket: a browser is refused with the error page.
        page = a.get(f"{url}/verify/{number}")
        assert page.status_code == 429 and "text/html" in page.headers["content-type"]
        with client_from("127.0.0.3") as b:
            other = b.get(api)
            assert other.status_code == 200 and other.json()["status"] == "VALID"
            assert b.get(f"{url}/verify/{number}").status_code == 200
        assert a.get(api).status_code == 429  # still refused: nothing was reset


def test_the_api_answers_with_the_security_headers_and_no_session(dsn: str, serve: Serve) -> None:
    number = add_certificate(dsn)
    with serve() as url, httpx.Client(timeout=10) as client:
        api = f"{url}/api/v1/verify/{number}"
        lean = client.get(f"{api}?lang=fr", headers={"cookie": "kpx_session=forged"})
        assert lean.status_code == 200 and "set-cookie" not in lean.headers
        for name, value in SECURITY_HEADERS:
            assert lean.headers[name] == value
        assert lean.headers["cache-control"] == "no-store"
        assert lean.headers["content-type"] == "application/json"
        # A streamed body goes through the whole middleware stack instead: the same answer.
        full = client.request("GET", api, content=iter([b"x"]))  # streamed: chunked
        assert full.status_code == 200 and full.content == lean.content
        assert {n: full.headers[n] for n, _ in SECURITY_HEADERS} == dict(SECURITY_HEADERS)
        head = client.head(api)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(lean.content))
        # A body over the limit is refused before anything is looked up.
        assert client.request("GET", api, content=b"x" * 100_000).status_code == 413
        assert client.get(f"{url}/healthz").text == "ok\n"


def test_a_void_is_seen_as_soon_as_its_notification_reaches_the_portal(
    dsn: str, serve: Serve
) -> None:
    number = add_certificate(dsn)
    with serve() as url, httpx.Client(timeout=10) as client:
        api = f"{url}/api/v1/verify/{number}"
        assert [client.get(api).json()["status"] for _ in range(3)] == ["VALID"] * 3  # cached
        set_state(dsn, number, "VOIDED")
        # The cache hears of the void when it commits; over the loopback that takes
        # milliseconds. Asked until then, the portal may still say VALID, never afterwards.
        deadline = time.monotonic() + 2
        while (answer := client.get(api).json())["valid"] and time.monotonic() < deadline:
            time.sleep(0.002)
        assert (answer["valid"], answer["status"]) == (False, "VOIDED")
        assert all(client.get(api).json()["status"] == "VOIDED" for _ in range(3))
        assert "DO NOT ACCEPT" in client.get(f"{url}/verify/{number}").text


def test_concurrent_lookups_each_get_their_own_verdict(dsn: str, serve: Serve) -> None:
    valid = [add_certificate(dsn) for _ in range(20)]
    voided = [add_certificate(dsn, "VOIDED") for _ in range(20)]
    unknown = [regional_number("XS", "NA", 2026, n) for n in range(1, 11)]
    expected = {n: "VALID" for n in valid} | {n: "VOIDED" for n in voided}
    expected |= {n: "UNKNOWN" for n in unknown}
    numbers = [*expected, *valid[:5]] * 3  # repeats too, in one round trip or across several

    # One connection: every lookup that arrives while it is busy goes in its next round trip.
    with serve(connections=1) as url:
        answers = at_once([f"{url}/api/v1/verify/{n}" for n in numbers])
    assert [(a.json()["certificate_id"], a.json()["status"]) for a in answers] == [
        (n, expected[n]) for n in numbers
    ]


def _verify_backends(dsn: str) -> int:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'kpx-registry-verify' AND datname = current_database()"
            )
            row = cur.fetchone()
        assert row is not None
        return int(row[0])
    finally:
        conn.close()


def test_a_flood_waits_on_its_bounded_connections_then_is_told_503(dsn: str, serve: Serve) -> None:
    number = add_certificate(dsn)
    locker = psycopg2.connect(dsn)
    with serve(connections=1, wait_seconds=0.5) as url, httpx.Client(timeout=10) as client:
        api = f"{url}/api/v1/verify/{number}"
        assert client.get(api).status_code == 200
        try:
            with locker.cursor() as cur:  # the lookups' table locked, as a long write would
                cur.execute("LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE")

            answers = at_once([api] * 20)
            assert _verify_backends(dsn) == 1  # never more than the bound on the database
        finally:
            locker.rollback()
            locker.close()
        assert {a.status_code for a in answers} == {503}
        assert answers[0].json()["title"] == "Busy"
        # The statement timed out and its connection went back to work: answers resume.
        deadline = time.monotonic() + 10
        while (status := client.get(api).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200


def test_lookups_carry_on_when_the_database_drops_their_connections(dsn: str, serve: Serve) -> None:
    number = add_certificate(dsn)
    with serve(connections=2) as url, httpx.Client(timeout=10) as client:
        api = f"{url}/api/v1/verify/{number}"
        assert client.get(api).status_code == 200
        conn = connect(dsn, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'kpx-registry-verify'"
                    " AND datname = current_database()"
                )
        finally:
            conn.close()
        # The dead idle connection is found on use, and the lookup sent again afresh.
        answer = client.get(api)
        assert answer.status_code == 200 and answer.json()["status"] == "VALID"
