"""The verification cache (exchange/registry/web/verifycache.py) on a real PostgreSQL.

The portal's lookups (lookups.py) with their cache and its listener, driven by an event loop of
their own, on a private database migrated as the registry's, so its announcements (sql/010)
come from real triggers at real commits. Changes are made in other connections, as the
registry makes them. Each test waits for a notification by polling the cache's count of
announcements for a few milliseconds, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import pytest
from support.certificates import add_certificate, set_state
from support.registry import region_for

from exchange.adapters.postgres import Connection, connect, transaction
from exchange.domain.certnumber import regional_number
from exchange.registry import service
from exchange.registry.web import verifycache
from exchange.registry.web.lookups import Lookups, Row
from exchange.registry.web.verdict import Facts, Status
from exchange.registry.web.verifycache import VerifyCache

TODAY = date(2026, 3, 10)
T = TypeVar("T")


@pytest.fixture(scope="module")
def dsn(make_session_database: Any) -> str:
    url: str = make_session_database().url
    conn = connect(url)
    try:
        service.prepare_database(conn, region_for("kpx-verify-cache-tests"))
    finally:
        conn.close()
    return url


def run(body: Callable[[], Awaitable[T]]) -> T:
    """``body()`` on an event loop of its own, in a thread of its own (the browser tests of
    the same session may leave a loop running in this one)."""
    out: list[T] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            out.append(asyncio.run(body()))  # type: ignore[arg-type]
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the test's loop did not finish"
    if failure:
        raise failure[0]
    return out[0]


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


async def listening(lookups: Lookups) -> None:
    """Once the cache's listener listens (the first lookup starts it)."""
    await until(lambda: lookups.cache.live, "the listener")


async def heard(lookups: Lookups, seen: int) -> None:
    """Once the cache has seen an announcement after ``seen``."""
    await until(lambda: lookups.cache.seen > seen, "the notification")


async def status(lookups: Lookups, number: str, on: date = TODAY) -> Status:
    return (await lookups.verify(number, "XS", on)).status


def execute(dsn: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement in a connection and transaction of its own; its rows, if any."""
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


# pg_stat_activity's rows of the cache's listener on the test database.
LISTENER = "application_name = 'kpx-registry-verify-listen' AND datname = current_database()"


def listeners(dsn: str) -> int:
    """Backends of the cache's listener on ``dsn``'s database."""
    rows = execute(dsn, f"SELECT count(*) FROM pg_stat_activity WHERE {LISTENER}")
    return int(rows[0][0])


def test_a_cached_valid_certificate_voided_elsewhere_is_do_not_accept_once_announced(
    dsn: str,
) -> None:
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            assert await status(lookups, number) is Status.VALID  # from the database
            await listening(lookups)
            assert await status(lookups, number) is Status.VALID  # now cached
            hits = lookups.cache.hits
            assert await status(lookups, number) is Status.VALID
            assert lookups.cache.hits == hits + 1
            seen = lookups.cache.seen
            set_state(dsn, number, "VOIDED")
            await heard(lookups, seen)
            verdict = await lookups.verify(number, "XS", TODAY)
            assert (verdict.status, verdict.valid) == (Status.VOIDED, False)
            assert await status(lookups, number) is Status.VOIDED  # read again, cached
            body = lookups.cached_body(number, TODAY)
            assert body is not None and b'"status":"VOIDED"' in body
        finally:
            lookups.close()

    run(body)


def _copy_confirmation(dsn: str, number: str, received_on: str) -> None:
    """An import confirmation by ZA, written by COPY (COPY fires statement triggers too)."""
    row = f"{uuid.uuid4()}\t{number}\tXS\tZA\t{received_on}\t2\t100.50\t15000\tt\n"
    conn = connect(dsn)
    try:
        with transaction(conn) as cur:
            cur.copy_expert(
                "COPY import_confirmations (event_id, certificate_id, issuing_participant,"
                " importing_participant, received_on, parcels, carats, value_usd, seal_intact)"
                " FROM STDIN",
                io.StringIO(row),
            )
    finally:
        conn.close()


def test_an_import_confirmation_is_heard_and_the_certificate_already_imported(dsn: str) -> None:
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            assert await status(lookups, number) is Status.VALID
            await listening(lookups)
            assert await status(lookups, number) is Status.VALID
            # The registry records the confirmation and the state in one transaction; here
            # they are two, so that each table's announcement is seen on its own.
            seen = lookups.cache.seen
            set_state(dsn, number, "IMPORT_CONFIRMED")
            await heard(lookups, seen)
            first = await lookups.verify(number, "XS", TODAY)
            assert first.status is Status.ALREADY_IMPORTED and "?" in (first.reason or "")
            assert await status(lookups, number) is Status.ALREADY_IMPORTED  # cached again
            seen = lookups.cache.seen
            _copy_confirmation(dsn, number, "2026-03-09")
            await heard(lookups, seen)
            again = await lookups.verify(number, "XS", TODAY)
            assert again.status is Status.ALREADY_IMPORTED
            assert "2026-03-09 by ZA" in (again.reason or "")
        finally:
            lookups.close()

    run(body)


class _HeldBack(Lookups):
    """Lookups whose rows, once read, are handed over only when ``release`` is set: a round
    trip whose answer reaches the loop after a later commit's notification."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, 1)
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def _query(self, conn: Connection, numbers: list[str]) -> list[Row]:
        rows = await super()._query(conn, numbers)
        self.read.set()
        await self.release.wait()
        return rows


def test_rows_read_before_a_commit_and_handed_over_after_its_notification_are_not_cached(
    dsn: str,
) -> None:
    number, other = add_certificate(dsn), add_certificate(dsn)

    async def body() -> None:
        lookups = _HeldBack(dsn)
        lookups.release.set()
        try:
            assert await status(lookups, other) is Status.VALID  # starts the listener
            await listening(lookups)
            lookups.release.clear()
            lookups.read.clear()
            stale = asyncio.ensure_future(lookups.verify(number, "XS", TODAY))
            pending = asyncio.ensure_future(lookups.verify(other, "XS", TODAY))
            await lookups.read.wait()  # both read, as VALID, in one round trip
            seen = lookups.cache.seen
            set_state(dsn, number, "VOIDED")
            await heard(lookups, seen)  # the void is announced before the rows arrive
            lookups.release.set()
            assert (await stale).status is Status.VALID  # what its snapshot held
            assert (await pending).status is Status.VALID
            # The stale row was not cached; the other one, not announced, was.
            assert lookups.cached_body(number, TODAY) is None
            assert lookups.cached_body(other, TODAY) is not None
            assert await status(lookups, number) is Status.VOIDED
        finally:
            lookups.close()

    run(body)


def test_an_announcement_of_everything_during_a_round_trip_caches_none_of_it(dsn: str) -> None:
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = _HeldBack(dsn)
        lookups.release.set()
        try:
            await lookups.verify(number, "XS", TODAY)
            await listening(lookups)
            lookups.cache.announced("*")  # what a TRUNCATE or a reconnection announces
            assert len(lookups.cache) == 0
            lookups.release.clear()
            lookups.read.clear()
            answer = asyncio.ensure_future(lookups.verify(number, "XS", TODAY))
            await lookups.read.wait()
            seen = lookups.cache.seen
            execute(dsn, "NOTIFY kpx_verify, '*'")
            await heard(lookups, seen)
            lookups.release.set()
            assert (await answer).status is Status.VALID
            assert len(lookups.cache) == 0
        finally:
            lookups.close()

    run(body)


def test_a_terminated_listener_turns_the_cache_off_then_on_again_empty(dsn: str) -> None:
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            await lookups.verify(number, "XS", TODAY)
            await listening(lookups)
            assert await status(lookups, number) is Status.VALID
            assert len(lookups.cache) == 1
            execute(dsn, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {LISTENER}")
            await until(lambda: not lookups.cache.live, "the listener to fall")
            assert len(lookups.cache) == 0
            # Voided while the listener reconnects: its notification may never be heard.
            set_state(dsn, number, "VOIDED")
            hits = lookups.cache.hits
            assert await status(lookups, number) is Status.VOIDED  # from the database
            assert lookups.cache.hits == hits
            await listening(lookups)
            assert await status(lookups, number) is Status.VOIDED
            assert await status(lookups, number) is Status.VOIDED
            assert lookups.cache.hits == hits + 1  # cached again after the reconnection
            seen = lookups.cache.seen
            set_state(dsn, number, "ISSUED")  # and the new listener hears the next change
            await heard(lookups, seen)
            assert await status(lookups, number) is Status.VALID
        finally:
            lookups.close()

    run(body)


def test_a_hung_listener_backend_turns_the_cache_off_within_seconds(dsn: str) -> None:
    """A backend that stops answering (SIGSTOP: its kernel still answers TCP keepalives)
    while a void commits elsewhere: the listener's ping goes unanswered, the cache turns off,
    and the void is read from the database instead of the cached VALID."""
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        stopped: list[int] = []
        try:
            await lookups.verify(number, "XS", TODAY)
            await listening(lookups)
            assert await status(lookups, number) is Status.VALID
            [(pid,)] = execute(dsn, f"SELECT pid FROM pg_stat_activity WHERE {LISTENER}")
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
            set_state(dsn, number, "VOIDED")  # its notification cannot be delivered
            limit = verifycache.HEARTBEAT + verifycache.PING_TIMEOUT + 2.0
            await until(lambda: not lookups.cache.live, "the listener to fall", timeout=limit)
            assert await status(lookups, number) is Status.VOIDED
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            lookups.close()

    run(body)


def test_without_a_listener_nothing_is_served_or_cached(dsn: str) -> None:
    unreachable = dsn.rsplit("/", 1)[0] + "/kpx_no_such_database"
    found = [(regional_number("XS", "BW", 2026, 1), _facts())]

    async def body() -> None:
        cache = VerifyCache(unreachable, 10)
        try:
            for _ in range(3):
                ticket = cache.ticket()  # starts the listener, which cannot connect
                await asyncio.sleep(0.05)
                cache.admit(ticket, found)
                assert not cache.live and len(cache) == 0
                assert cache.get(found[0][0]) is None
        finally:
            cache.close()

    run(body)


def _facts() -> Facts:
    from decimal import Decimal

    return Facts("ISSUED", None, "BW", "ZA", date(2026, 3, 1), date(2026, 4, 1), 2,
                 Decimal("100.50"))  # fmt: skip


def test_the_bound_holds_and_the_least_recently_used_go_first(dsn: str) -> None:
    numbers = [add_certificate(dsn) for _ in range(8)]

    async def body() -> None:
        lookups = Lookups(dsn, 2, cache_size=5)
        try:
            await lookups.verify(numbers[0], "XS", TODAY)
            await listening(lookups)
            for number in numbers:
                assert await status(lookups, number) is Status.VALID
            assert len(lookups.cache) == 5 and lookups.cache.dropped == 3
            assert lookups.cached_body(numbers[2], TODAY) is None  # the oldest went
            assert lookups.cached_body(numbers[3], TODAY) is not None
            assert await status(lookups, numbers[0]) is Status.VALID
            assert len(lookups.cache) == 5
            assert lookups.cached_body(numbers[4], TODAY) is None  # 3 was used since
            assert lookups.cached_body(numbers[3], TODAY) is not None
        finally:
            lookups.close()

    run(body)


def test_unknown_numbers_are_never_cached_and_a_copied_certificate_is_found_at_once(
    dsn: str,
) -> None:
    number = regional_number("XS", "BW", 2026, 900_001)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            assert await status(lookups, number) is Status.UNKNOWN
            await listening(lookups)
            assert await status(lookups, number) is Status.UNKNOWN
            assert len(lookups.cache) == 0
            row = (f"{number}\tBW\tXS\tBW\tZA\tINTRA_REGIONAL\tUNMIXED\t{{BW}}\t"
                   f"2026-03-01\t2026-04-01\t1\t10.00\t100.00\t{{}}\t\\\\x00\tISSUED\t"
                   f"{uuid.uuid4()}\n")  # fmt: skip
            conn = connect(dsn)
            try:
                with transaction(conn) as cur:
                    cur.copy_expert(
                        "COPY certificates (certificate_id, producer, issuing_participant,"
                        " issuing_member, destination, scope, origin_type, origin_countries,"
                        " date_of_issue, date_of_expiry, number_of_parcels, total_carats,"
                        " total_value_usd, body, content_hash, state, event_id) FROM STDIN",
                        io.StringIO(row),
                    )
            finally:
                conn.close()
            # Inserts are not announced; the number was never cached, so nothing is stale.
            assert await status(lookups, number) is Status.VALID
        finally:
            lookups.close()

    run(body)


def test_the_cached_answer_is_judged_on_the_day_it_is_asked(dsn: str) -> None:
    number = add_certificate(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            await lookups.verify(number, "XS", TODAY)
            await listening(lookups)
            await lookups.verify(number, "XS", TODAY)
            assert b'"status":"VALID"' in (lookups.cached_body(number, TODAY) or b"")
            later = lookups.cached_body(f" {number.lower()} ", date(2026, 4, 2))
            assert later is not None and b'"status":"EXPIRED"' in later
            earlier = lookups.cached_body(number, date(2026, 2, 28))
            assert earlier is not None and b'"status":"NOT_YET_VALID"' in earlier
            assert (await lookups.verify(number, "XS", date(2026, 4, 2))).status is Status.EXPIRED
        finally:
            lookups.close()

    run(body)


def test_hostile_ids_and_payloads_never_stop_the_listener(dsn: str) -> None:
    number = add_certificate(dsn)
    hostile = ["X" * 5000, "A\x01B\tC\nD E", "ÉÑ-\u202e-汉字", "*"]
    for text in hostile:
        add_certificate(dsn, number=text)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        try:
            await lookups.verify(number, "XS", TODAY)
            await listening(lookups)
            seen = lookups.cache.seen
            execute(dsn, "UPDATE certificates SET state = 'VOIDED' WHERE certificate_id = ANY(%s)",
                    (hostile,))  # fmt: skip
            for payload in ["", " ", "x" * 7999, "\x01\x02\x7f", "A\nB\tC", "ÿ" * 100]:
                execute(dsn, "SELECT pg_notify('kpx_verify', %s)", (payload,))
            await heard(lookups, seen + 6)
            for text in hostile:
                assert (await lookups.verify(text, "XS", TODAY)).status is Status.MISTYPED
            assert lookups.cache.live
            await lookups.verify(number, "XS", TODAY)
            assert lookups.cached_body(number, TODAY) is not None
            seen = lookups.cache.seen
            set_state(dsn, number, "VOIDED")
            await heard(lookups, seen)
            assert await status(lookups, number) is Status.VOIDED
        finally:
            lookups.close()

    run(body)


def test_closing_the_lookups_closes_the_listener(dsn: str) -> None:
    number = add_certificate(dsn)
    before = listeners(dsn)

    async def body() -> None:
        lookups = Lookups(dsn, 2)
        await lookups.verify(number, "XS", TODAY)
        await listening(lookups)
        assert listeners(dsn) == before + 1
        lookups.close()
        assert not lookups.cache.live and lookups.cached_body(number, TODAY) is None
        await until(lambda: listeners(dsn) == before, "the listener's backend to end")

    run(body)


def test_the_announcements_are_chunked_under_the_payload_limit(dsn: str) -> None:
    numbers = [regional_number("XS", "NA", 2026, n) for n in range(1, 1201)]
    for number in numbers:
        add_certificate(dsn, number=number)
    conn = connect(dsn, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("LISTEN kpx_verify")
        execute(dsn, "UPDATE certificates SET state = 'VOIDED' WHERE certificate_id = ANY(%s)",
                (numbers,))  # fmt: skip
        execute(dsn, "UPDATE certificates SET state = 'VOIDED' WHERE false")  # none: no notice
        deadline = time.monotonic() + 5
        payloads: list[str] = []
        while len(" ".join(payloads).split()) < len(numbers) and time.monotonic() < deadline:
            conn.poll()
            payloads += [n.payload for n in conn.notifies]
            conn.notifies.clear()
            time.sleep(0.01)
        time.sleep(0.1)
        conn.poll()
        payloads += [n.payload for n in conn.notifies]
    finally:
        conn.close()
    assert len(payloads) > 1 and all(len(p.encode()) < 8000 for p in payloads)
    assert sorted(" ".join(payloads).split()) == sorted(numbers)
