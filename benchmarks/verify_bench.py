"""Public verification under load, beside the same server's static rate, while ingest runs.

``python -m benchmarks.verify_bench [--certificates 100000] [--events 10000] [--seconds 5]``.
In a throw-away database and vhost:

1. 100,000 accepted certificates are written straight into the registry's tables (COPY; the
   lookups need rows, not their history);
2. the **lookup ceiling**: the same verification without HTTP and without the cache (the
   portal's 4 non-blocking lookup connections, one event loop) — what the database round trip
   allows on this machine;
3. the portal (``exchange.registry.web``, the app ``kpx registry serve`` runs, rate limit off,
   its verification cache at the default 100,000 entries) serves in its own process; a
   closed-loop client with 16 keep-alive connections measures, each for ``--seconds``:
   the **static rate** (``/healthz``); the **hot-set verify rate** (``/api/v1/verify/{id}``
   of 5,000 numbers sampled from the 100,000, chosen at random, each asked once before the
   run: cache hits — the goal's row); and the **cold verify rate**, every request a number
   not asked before (the other 95,000 in a fresh order, each once: every one a cache miss,
   the database path). The portal's cache counters give each run's hit ratio;
4. **ingest alone**: N signed CertificateIssued events in kpx.registry, one registry process,
   events/s (again after step 6: the ceiling is the mean of the two rounds);
5. **together**: N more events ingested while the client asks for hot-set verifications
   open-loop at half the hot verify rate: ingest events/s (goal: ≥ 0.9 of alone) and verify
   p99 (goal < 20 ms) — the load from the ingest's first commit, not while its process
   starts;
6. **shared capacity**: the hot-set closed-loop rate while N more events are ingested, the
   static rate while N more are, and the open-loop p99 at half the hot-set rate beside N
   more: the goal read with every figure taken while the ingest runs (its ceiling too), what
   a portal sharing its host with the ingest can be planned for. Step 5's half load is half
   the rate of the portal *alone*, which on two cores is about what it sustains at all
   while the ingest runs: it measures queueing, and is reported beside.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (httpx would be the
bottleneck on two cores). Client, portal, registry, RabbitMQ and PostgreSQL share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from datetime import date
from typing import Any

from benchmarks import Row, database_server_url
from benchmarks.registry_bench import (
    MEMBERS,
    _messages,
    _publish,
    _registry_process,
    _setup,
    _url,
)
from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.domain.certnumber import regional_number
from exchange.wire import topology
from exchange.wire.signing import generate_key

CONNECTIONS = 16
HOT_SET = 5000  # numbers the hot-set run asks for, again and again
PREFILL_MEMBER = "LS"  # the prefilled certificates' member: no clash with the ingested ones


def prefill(dsn: str, n: int) -> list[str]:
    """COPY ``n`` accepted certificates into the registry tables; their numbers."""
    numbers = [regional_number("XS", PREFILL_MEMBER, 2025, i + 1) for i in range(n)]
    out = io.StringIO()
    for i, number in enumerate(numbers):
        state = "ISSUED" if i % 10 else "VOIDED"
        out.write(f"{number}\tLS\tXS\tLS\tZA\tINTRA_REGIONAL\tUNMIXED\t{{LS}}\t2026-11-01\t"
                  f"2026-12-31\t1\t100.00\t15000.00\t{{}}\t\\\\x00\t{state}\t\\N\t"
                  f"{_uuid(i)}\n")  # fmt: skip
    out.seek(0)
    conn = postgres.connect(dsn)
    try:
        with postgres.transaction(conn) as cur:
            cur.copy_expert(
                "COPY certificates (certificate_id, producer, issuing_participant,"
                " issuing_member, destination, scope, origin_type, origin_countries,"
                " date_of_issue, date_of_expiry, number_of_parcels, total_carats,"
                " total_value_usd, body, content_hash, state, replaced_by, event_id) FROM STDIN",
                out,
            )
        with postgres.transaction(conn) as cur:
            cur.execute("ANALYZE certificates")
    finally:
        conn.close()
    return numbers


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


# ------------------------------------------------------------------ the portal process


def serve_main(dsn: str, vhost: str, port: int) -> None:
    """The portal on ``dsn`` (child process entry point)."""
    import uvicorn

    from benchmarks.registry_bench import _region
    from exchange.registry.web.app import build
    from exchange.registry.web.lookups import Lookups
    from exchange.registry.web.portal import Limits, Portal
    from exchange.registry.web.reads import PublicPool
    from exchange.wire.codec import default_store

    portal = Portal(
        region=_region(vhost), schemas=default_store(), signer=lambda: generate_key("XS"),
        amqp_url=lambda: "", broker_user="", lookups=Lookups(dsn, 4),
        public=PublicPool(dsn, 2, read_only=True), work=PublicPool(dsn, 2),
        limits=Limits(verify_rate=1e9, verify_burst=1e9),
    )  # fmt: skip
    app = build(portal, secrets.token_bytes(32))
    cache = portal.lookups.cache

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        """The portal, and the benchmark's own ``/bench/cache``: the cache's counters."""
        if scope["type"] != "http" or scope["path"] != CACHE_PATH:
            await app(scope, receive, send)
            return
        body = json.dumps({"hits": cache.hits, "misses": cache.misses, "size": len(cache),
                           "live": cache.live}).encode()  # fmt: skip
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(counted, host="127.0.0.1", port=port, log_level="warning", access_log=False)


CACHE_PATH = "/bench/cache"


def cache_counters(port: int) -> dict[str, Any]:
    import httpx

    counters: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}{CACHE_PATH}").json()
    return counters


# ------------------------------------------------------------------ the client


async def _request(reader: Any, writer: Any, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status


async def closed_loop(
    port: int, paths: list[str], seconds: float, walk: bool = False
) -> tuple[int, float]:
    """Requests answered, and seconds taken, by CONNECTIONS connections each sending back to
    back: paths chosen at random, or with ``walk`` each path once, in order, until the end of
    the list or of the time."""
    done = 0
    stop = time.perf_counter() + seconds
    walked = iter(paths)

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            path = next(walked, None) if walk else random.choice(paths)
            if path is None:
                break
            assert await _request(reader, writer, path) == 200
            done += 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
    return done, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def portal_backends(dsn: str) -> list[int]:
    """The process ids of the portal's PostgreSQL backends (verification and public)."""
    conn = postgres.connect(dsn)
    try:
        rows = postgres.fetch_all(
            conn,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name IN ('kpx-registry-verify', 'kpx-registry-public')",
        )
    finally:
        conn.close()
    return [r["pid"] for r in rows]


def measured(
    port: int, paths: list[str], seconds: float, pids: list[int], walk: bool = False
) -> dict[str, float]:
    """The closed-loop rate of ``paths`` (see :func:`closed_loop`), the CPU each request cost
    the processes ``pids`` (the portal, this client, then the portal's database backends),
    in µs — the machine's two cores are shared, so CPU per request says what the rates cannot
    — and the share of the requests the portal's cache answered."""
    counted = cache_counters(port)
    before = [cpu_seconds(p) for p in pids]
    done, elapsed = asyncio.run(closed_loop(port, paths, seconds, walk))
    spent = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    after = cache_counters(port)
    hits, misses = after["hits"] - counted["hits"], after["misses"] - counted["misses"]
    return {
        "per_s": done / elapsed,
        "requests": done,
        "portal_cpu_us": spent[0] / done * 1e6,
        "client_cpu_us": spent[1] / done * 1e6,
        "db_cpu_us": sum(spent[2:]) / done * 1e6,
        "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
    }


async def open_loop(port: int, paths: list[str], rate: float, seconds: float) -> list[float]:
    """Latencies (s) of requests sent at ``rate``/s spread over the connections."""
    latencies: list[float] = []
    per_conn = rate / CONNECTIONS
    stop = time.perf_counter() + seconds

    async def one(offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        due = time.perf_counter() + offset
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            assert await _request(reader, writer, random.choice(paths)) == 200
            # From when it was due, not when it was sent: a slow answer delays the next
            # request, and that wait is latency too (no coordinated omission).
            latencies.append(time.perf_counter() - due)
            due += 1 / per_conn
        writer.close()

    await asyncio.gather(*(one(i / rate) for i in range(CONNECTIONS)))
    return latencies


def db_ceiling(dsn: str, numbers: list[str], seconds: float) -> float:
    """The same lookup without HTTP: the portal's 4 lookup connections (lookups.py) driven
    by one event loop for CONNECTIONS callers, as the server drives them; per s."""
    import uvloop

    from exchange.registry.web.lookups import Lookups

    async def measure() -> float:
        lookups = Lookups(dsn, 4, cache_size=0)  # the round trip itself, every time
        stop = time.perf_counter() + seconds
        done = 0

        async def one() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await lookups.verify(random.choice(numbers), "XS", date(2026, 12, 1))
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(CONNECTIONS)))
        lookups.close()
        return done / (time.perf_counter() - start)

    return uvloop.run(measure())


# ------------------------------------------------------------------ ingest


def ingest(
    dsn: str, url: str, vhost: str, target: int, started: threading.Event | None = None
) -> float:
    """Run one registry process until ``target`` events are decided; events/s from its first
    commit (``started`` is set then: the process's start-up is not part of the rate)."""
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    worker = spawn.Process(target=_registry_process, args=(dsn, url, vhost, stop, 250, 500, False))
    worker.start()
    conn = postgres.connect(dsn)
    count = "SELECT count(*) AS n FROM event_log"
    first = postgres.fetch_all(conn, count)[0]["n"]
    while postgres.fetch_all(conn, count)[0]["n"] == first:
        time.sleep(0.005)
    start, begin = time.perf_counter(), postgres.fetch_all(conn, count)[0]["n"]
    if started is not None:
        started.set()
    while (now := postgres.fetch_all(conn, count)[0]["n"]) < target:
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    stop.set()
    worker.join(timeout=60)
    conn.close()
    return float(now - begin) / elapsed


def _queued(admin_url: str, vhost: str, n: int) -> None:
    admin = Admin(admin_url)
    try:
        while {q["name"]: q.get("messages", 0) for q in admin.queues(vhost)}.get(
            topology.REGISTRY_QUEUE
        ) != n:
            time.sleep(0.5)
    finally:
        admin.close()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(certificates: int = 100_000, events: int = 10_000, seconds: float = 5.0) -> dict[str, Any]:
    """Every figure of the module docstring; printed and returned."""
    admin_url = os.environ.get("KPX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    name = f"kpxb_{secrets.token_hex(4)}"
    dsn = postgres.dsn_for(database_server_url(), name)
    postgres.create_database(database_server_url(), name)
    _setup(admin_url, name)
    portal = None
    try:
        from benchmarks.registry_bench import _region
        from exchange.registry import service, store

        conn = postgres.connect(dsn)
        service.prepare_database(conn, _region(name))
        signers = {m: generate_key(m) for m in MEMBERS}
        with postgres.transaction(conn) as cur:
            for signer in signers.values():
                store.register_key(cur, signer.verify_key)
        conn.close()
        from exchange.reconciler import service as reconciler_service

        reconciler_service.prepare(dsn)
        numbers = prefill(dsn, certificates)
        port = _free_port()
        portal = subprocess.Popen([sys.executable, "-m", "benchmarks.verify_bench", "--serve",
                                   dsn, name, str(port)])  # fmt: skip
        _wait_up(port)
        hot = random.sample(numbers, min(HOT_SET, len(numbers)))
        paths = [f"/api/v1/verify/{n}" for n in hot]
        chosen = set(hot)
        cold = [f"/api/v1/verify/{n}" for n in numbers if n not in chosen]
        random.shuffle(cold)
        ceiling = db_ceiling(dsn, numbers, seconds)
        # The portal's connections opened, and each hot number asked once: the hot run
        # measures the cache's hits (the cold run below measures the misses).
        asyncio.run(closed_loop(port, paths, 60, walk=True))
        pids = [portal.pid, os.getpid(), *portal_backends(dsn)]
        static_run = measured(port, ["/healthz"], seconds, pids)
        verify_run = measured(port, paths, seconds, pids)
        cold_run = measured(port, cold, seconds, pids, walk=True)
        static, verify = static_run["per_s"], verify_run["per_s"]
        messages = _messages(6 * events, signers)
        registry_url = _url(admin_url, name, topology.registry_user(name))

        def queue(round_: int) -> None:
            """Round ``round_``'s events in kpx.registry, all of them queued."""
            _publish(admin_url, name, messages[round_ * events : (round_ + 1) * events])
            _queued(admin_url, name, events)

        def alone_round(round_: int) -> float:
            """Round ``round_``'s events ingested with nothing beside; events/s."""
            queue(round_)
            return ingest(dsn, registry_url, name, (round_ + 1) * events)

        alone = alone_round(0)
        result: dict[str, Any] = {}

        def beside_ingest(round_: int, load: Any) -> tuple[Any, float]:
            """``load()`` (a coroutine) from the ingest's first commit: while it runs at its
            sustained rate, not while its process starts; its result and the ingest's rate."""
            queue(round_)

            async def both() -> tuple[Any, float]:
                loop = asyncio.get_running_loop()
                started = threading.Event()
                job = loop.run_in_executor(None, ingest, dsn, registry_url, name,
                                           (round_ + 1) * events, started)  # fmt: skip
                await loop.run_in_executor(None, started.wait)
                return await load(), await job

            return asyncio.run(both())

        # Over 90 % of the time the ingest is expected to take, so that it runs throughout.
        window = 0.9 * events / alone
        latencies, result["ingest_with_load"] = beside_ingest(
            1, lambda: open_loop(port, paths, verify / 2, window)
        )
        # What the portal sustains while the ingest takes its share of the two cores, and the
        # latency at half of that: the capacity a registry sharing its host can plan with.
        (done, elapsed), _ = beside_ingest(2, lambda: closed_loop(port, paths, window))
        beside = done / elapsed
        shared, shared_ingest = beside_ingest(3, lambda: open_loop(port, paths, beside / 2, window))
        (done, elapsed), _ = beside_ingest(4, lambda: closed_loop(port, ["/healthz"], window))
        result.update(verify_beside_ingest_per_s=beside, shared_p50_ms=_p(shared, 0.5) * 1000,
                      shared_p99_ms=_p(shared, 0.99) * 1000,
                      static_beside_ingest_per_s=done / elapsed,
                      ingest_beside_shared=shared_ingest)  # fmt: skip
        # Alone again, last: the machine drifts over a run (the prefill's checkpoint and
        # autovacuum early, a longer event log late), so the ceiling is both rounds' mean.
        again = alone_round(5)
        result.update(ingest_alone_first=alone, ingest_alone_last=again)
        alone = (alone + again) / 2
    finally:
        if portal is not None:
            portal.terminate()
            portal.wait(timeout=30)
        admin = Admin(admin_url)
        admin.delete_vhost(name)
        admin.close()
        postgres.drop_database(database_server_url(), name)
    result.update(certificates=certificates, static_per_s=static, verify_per_s=verify,
                  lookup_without_http_per_s=ceiling,
                  ratio=verify / static, ingest_alone=alone,
                  portal_cpu_us_static=static_run["portal_cpu_us"],
                  portal_cpu_us_verify=verify_run["portal_cpu_us"],
                  client_cpu_us_static=static_run["client_cpu_us"],
                  client_cpu_us_verify=verify_run["client_cpu_us"],
                  db_cpu_us_verify=verify_run["db_cpu_us"], hit_ratio=verify_run["hit_ratio"],
                  verify_cold_per_s=cold_run["per_s"], cold_requests=cold_run["requests"],
                  cold_hit_ratio=cold_run["hit_ratio"],
                  portal_cpu_us_cold=cold_run["portal_cpu_us"],
                  client_cpu_us_cold=cold_run["client_cpu_us"],
                  db_cpu_us_cold=cold_run["db_cpu_us"], p50_ms=_p(latencies, 0.5) * 1000,
                  p99_ms=_p(latencies, 0.99) * 1000, requests=len(latencies),
                  half_rate=verify / 2)  # fmt: skip
    result["ingest_kept"] = result["ingest_with_load"] / alone
    print(json.dumps(result, indent=2))
    return result


_ALONE = "ingest alone, same run: the mean of a round first and a round last"


def rows(result: dict[str, Any]) -> list[Row]:
    """The figures of :func:`run` as rows of ``python -m benchmarks``' table, with the goals
    of the public verification API (the hot set's row; the cold row is the database path)."""
    static, verify = result["static_per_s"], result["verify_per_s"]
    shared_static = result["static_beside_ingest_per_s"]
    cpu = (
        f"CPU per request, µs: portal {result['portal_cpu_us_static']:.0f} static /"
        f" {result['portal_cpu_us_verify']:.0f} verify, client"
        f" {result['client_cpu_us_static']:.0f} / {result['client_cpu_us_verify']:.0f},"
        f" database {result['db_cpu_us_verify']:.0f} a request;"
        f" cache hit ratio {result['hit_ratio']:.3f}"
    )
    cold = (
        f"{result['cold_requests']:,} numbers each asked once; cache hit ratio"
        f" {result['cold_hit_ratio']:.3f}; CPU per request, µs: portal"
        f" {result['portal_cpu_us_cold']:.0f}, client {result['client_cpu_us_cold']:.0f},"
        f" database {result['db_cpu_us_cold']:.0f}"
    )
    return [
        Row("portal static answer (/healthz), 16 keep-alive connections", static, "req/s"),
        Row(f"portal GET /api/v1/verify/{{id}}, hot set: {HOT_SET:,} of "
            f"{result['certificates']:,} certificates", verify,
            "req/s", ceiling=static, ceiling_what="the same server's static answer, same run",
            goal="≥ 0.5", met=verify >= 0.5 * static, note=cpu),
        Row("portal GET /api/v1/verify/{id}, cold: every number a cache miss",
            result["verify_cold_per_s"], "req/s", ceiling=static,
            ceiling_what="the same server's static answer, same run", note=cold),
        Row("the same lookup without HTTP or cache (the portal's 4 connections)",
            result["lookup_without_http_per_s"], "lookups/s"),
        Row("verify latency p50 at half the rate alone (hot set), ingest running",
            result["p50_ms"], "ms"),
        Row("verify latency p99 at half the rate alone (hot set), ingest running",
            result["p99_ms"], "ms", goal="< 20 ms (strict reading)", met=result["p99_ms"] < 20,
            note=f"open loop at {result['half_rate']:,.0f} req/s: half of the rate alone, "
                 "about what the portal sustains at all beside the ingest (the row after "
                 "next): queueing"),
        Row("registry ingest beside the lookups at half the rate alone",
            result["ingest_with_load"], "events/s", ceiling=result["ingest_alone"],
            ceiling_what=_ALONE, goal="≥ 0.9 (strict reading)",
            met=result["ingest_kept"] >= 0.9),
        Row("portal static answer (/healthz) while ingest runs",
            result["static_beside_ingest_per_s"], "req/s", ceiling=static,
            ceiling_what="the same alone, same run"),
        Row("portal GET /api/v1/verify/{id}, hot set, while ingest runs",
            result["verify_beside_ingest_per_s"], "req/s", ceiling=shared_static,
            ceiling_what="the same server's static answer while ingest runs, same run",
            goal="≥ 0.5", met=result["verify_beside_ingest_per_s"] >= 0.5 * shared_static,
            note=f"{result['verify_beside_ingest_per_s'] / verify:.2f} of the same alone"),
        Row("verify latency p99 at half of that (hot set), ingest running",
            result["shared_p99_ms"], "ms", goal="< 20 ms", met=result["shared_p99_ms"] < 20,
            note=f"p50 {result['shared_p50_ms']:.1f} ms"),
        Row("registry ingest beside that load", result["ingest_beside_shared"], "events/s",
            ceiling=result["ingest_alone"], ceiling_what=_ALONE,
            goal="≥ 0.9", met=result["ingest_beside_shared"] >= 0.9 * result["ingest_alone"]),
    ]  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the portal did not start")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--serve"]:
        serve_main(args[1], args[2], int(args[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    ns = parser.parse_args(args)
    run(ns.certificates, ns.events, ns.seconds)


if __name__ == "__main__":
    main()
