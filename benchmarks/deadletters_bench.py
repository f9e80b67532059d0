"""Benchmark listing the stored dead letters and re-injecting one of them, at two sizes.

Issue 11, item 10: listing 15,000 dead letters took 25 s and re-injecting one id scanned the
whole queue one basic_get at a time (2 minutes at 38,000); the later prefetch scan stalled at
its window of 1,000 unacked messages (1,000 of 10,000 listed, the last id never found). The
registry now moves dead letters into its database (registry/deadmover.py) and lists and
re-injects by index (deadstore.py, reinjection.py): both should stay flat as the store
grows. For each size N (10,000 and 40,000 by default) this creates a scratch vhost with the
kpx topology and a scratch registry database on ``KPX_AMQP_URL`` / ``KPX_DATABASE_URL``,
dead-letters N messages, moves them into the store (timed: the mover's throughput), then
times a page of 100 (the first, and one in the middle) and a re-injection of the last id
(best of five each: the last ids are re-injected in turn), and removes the vhost and the
database. The figure to read is the ratio of the largest size to the smallest, measured in
the same run.

    python -m benchmarks.deadletters_bench [--messages 10000 40000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pika
from pika.spec import BasicProperties

from benchmarks import amqp_admin_url, scratch_database, scratch_vhost
from exchange.adapters.management import Admin
from exchange.adapters.postgres import Connection, connect, migrate, transaction
from exchange.registry import deadmover, deadstore, reinjection
from exchange.wire import topology


def _dead_letter(url: str, messages: int) -> list[str]:
    """Publish ``messages`` dead letters (one confirm at the end covers them all)."""
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(messages)]
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        headers = {"x-kpx-reason": "SCHEMA_INVALID: bench", "x-kpx-queue": topology.REGISTRY_QUEUE}
        for n, message_id in enumerate(ids):
            if n == len(ids) - 1:
                channel.confirm_delivery()
            props = BasicProperties(message_id=message_id, headers=headers, delivery_mode=2)
            channel.basic_publish(topology.DEAD, "BW.CertificateIssued", b"x" * 200, props)
    finally:
        conn.close()
    return ids


def _best(times: int, act: Callable[[int], object]) -> float:
    best = float("inf")
    for n in range(times):
        started = time.perf_counter()
        act(n)
        best = min(best, time.perf_counter() - started)
    return best


def _page(conn: Connection, after: int) -> int:
    with transaction(conn) as cur:
        return len(deadstore.page(cur, deadstore.Filter(after=after, limit=100)))


def run(messages: int) -> dict[str, float]:
    """Seconds to move ``messages`` dead letters, to list a page, to re-inject one."""
    with scratch_vhost() as (vhost, url), scratch_database() as dsn:
        user = urlsplit(amqp_admin_url()).username or "guest"
        admin = Admin(amqp_admin_url())
        try:  # the topology without its users: the administrator publishes and re-injects
            admin.apply(
                {
                    **topology.definitions(vhost, ["BW"]),
                    "permissions": [],
                    "users": [],
                    "topic_permissions": [],
                },
                user,
            )
        finally:
            admin.close()
        conn = connect(dsn)
        try:
            migrate(conn, "exchange.messaging")
            migrate(conn, "exchange.registry")
            ids = _dead_letter(url, messages)
            started = time.perf_counter()
            moved = deadmover.move_waiting(conn, url)
            moving = time.perf_counter() - started
            assert moved == messages, (moved, messages)
            first = _best(5, lambda _: _page(conn, 0))
            middle = _best(5, lambda _: _page(conn, messages // 2))

            def reinject(n: int) -> None:
                chosen = ids[-1 - n]
                done = reinjection.reinject(conn, url, user, "bench", {chosen})
                assert done.reinjected == (chosen,), done

            one = _best(5, reinject)
        finally:
            conn.close()
    return {
        "move_per_second": messages / moving,
        "first_page_seconds": first,
        "middle_page_seconds": middle,
        "reinject_one_seconds": one,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[10_000, 40_000])
    sizes = sorted(parser.parse_args().messages)
    figures = {n: run(n) for n in sizes}
    for n, f in figures.items():
        print(f"{n:>7,} dead letters: moved {f['move_per_second']:,.0f}/s; a page of 100 in "
              f"{f['first_page_seconds'] * 1000:.1f} ms (first), "
              f"{f['middle_page_seconds'] * 1000:.1f} ms (middle); one re-injected in "
              f"{f['reinject_one_seconds'] * 1000:.1f} ms")  # fmt: skip
    small, large = figures[sizes[0]], figures[sizes[-1]]
    for key in ("first_page_seconds", "middle_page_seconds", "reinject_one_seconds"):
        print(f"{key}: {sizes[-1]:,} / {sizes[0]:,} = {large[key] / small[key]:.2f}x "
              f"(flat is about 1; the store grew {sizes[-1] / sizes[0]:.0f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
