"""Benchmark ``kpx reconcile --as-of`` over N bulk-loaded certificates (default 1,000,000).

Creates a scratch database on ``KPX_DATABASE_URL``, applies the registry's and the
reconciler's migrations, and COPYs what a region of N accepted certificates holds: the
reconciler's projection (certificates, one parcel each, confirmations for about 95 % of them,
a few voids, half-yearly production per member, a sequence gap) and the registry's own rows
that the register checks (DESIGN §14) scan — the same N certificates with their JSON body,
their parcels naming the mine they came from, every member's exporters and mines registered,
and the mines' declared production — with a few exporters and mines left unregistered.

Then it times the command's own path (``service.reconcile_as_of``: the checks in one
transaction, then the notices sealed a chunk at a time) in a fresh child process, first run
and re-run (which must raise and seal nothing), and reads the child's peak RSS (``VmHWM``):
the checks run in the server and the notices are sealed in bounded chunks, so it stays flat
as N grows. ``python -m benchmarks`` runs :func:`rows`: N and N / 10, the first run beside the
45 s target and the peak RSS of the larger beside the smaller's.

    python -m benchmarks.reconcile_bench [--certificates N] [--keep]

``run(n) -> dict`` returns the figures of one size.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks import Row
from exchange.adapters.postgres import (
    Connection,
    connect,
    create_database,
    drop_database,
    dsn_for,
    migrate,
)
from exchange.domain.region import load_region
from exchange.reconciler import service
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key

SERVER = os.environ.get("KPX_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REGION_FILE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"
AS_OF = date(2026, 9, 30)
START = date(2024, 1, 1)
DAYS = 900  # issue dates from 2024-01-01 to mid-2026
MEMBERS = ("BW", "ZA", "NA", "LS", "AO", "CD", "ZW")
PARTNERS = ("EU", "AE", "IN")
HS = ("7102.10", "7102.21", "7102.31")
PRICE = {"BW": 150, "ZA": 120, "NA": 550, "LS": 350, "AO": 140, "CD": 8, "ZW": 50}
CHUNK = 50_000


def _copy(conn: Connection, table: str, rows: Iterator[str]) -> None:
    """COPY tab-separated lines in chunks, so the client never holds more than one chunk."""
    with conn.cursor() as cur:
        while True:
            buf = io.StringIO()
            n = 0
            for line in rows:
                buf.write(line)
                n += 1
                if n == CHUNK:
                    break
            if n == 0:
                break
            buf.seek(0)
            cur.copy_expert(f"COPY {table} FROM STDIN", buf)
    conn.commit()


def _certificates(n: int, rng: random.Random) -> Iterator[tuple[str, ...]]:
    for i in range(n):
        member = MEMBERS[i % len(MEMBERS)]
        issued = START + timedelta(days=rng.randrange(DAYS))
        carats = rng.randint(1_000, 1_000_000) / 100
        price = PRICE[member] * rng.lognormvariate(0, 0.25)
        if rng.random() < 0.0005:
            price *= 40  # a valuation outlier
        # a licence and a mine the register does not know, now and then (UNLICENSED_EXPORTER,
        # UNREGISTERED_PRODUCER)
        licence = f"EXP-{member}-{'X' if rng.random() < 0.0003 else i % EXPORTERS}"
        mine = f"MINE-{member}-{'X' if rng.random() < 0.0002 else i % MINES}"
        yield (f"XS-{member}-{issued.year}-{i:07d}-00", member, PARTNERS[i % 3],
               issued.isoformat(), f"{carats:.2f}", f"{carats * price:.2f}",
               HS[rng.randrange(3)], licence, mine)  # fmt: skip


EXPORTERS, MINES = 5, 4
_ZERO_ID = "00000000-0000-0000-0000-000000000000"


def load(conn: Connection, n: int, seed: int = 7) -> None:
    """Bulk-load the projection and the registry's tables the checks read."""

    def each() -> Iterator[tuple[str, ...]]:
        return _certificates(n, random.Random(seed))

    def certs() -> Iterator[str]:
        for cid, member, dest, issued, carats, usd, *_ in each():
            expiry = (date.fromisoformat(issued) + timedelta(days=59)).isoformat()
            yield (f"{cid}\tXS\t{member}\t{dest}\tUNMIXED\t{{{member}}}\t{issued}\t{expiry}"
                   f"\t1\t{carats}\t{usd}\t{_ZERO_ID}\n")  # fmt: skip

    def parcels() -> Iterator[str]:
        for cid, member, _, _, carats, usd, hs, *_ in each():
            yield f"{cid}\t1\t{hs}\t{carats}\t{usd}\t{member}\n"

    def confirmations() -> Iterator[str]:
        pick = random.Random(seed + 1)
        for i, (cid, _, dest, issued, carats, usd, *_) in enumerate(each()):
            if pick.random() < 0.95:
                on = (date.fromisoformat(issued) + timedelta(days=10)).isoformat()
                uid = f"00000000-0000-4000-8000-{i:012d}"
                yield f"{uid}\t{i}\t{cid}\tXS\t{dest}\t{on}\t1\t{carats}\t{usd}\tt\n"

    def registry_certs() -> Iterator[str]:
        # the registry's copy: its JSON body is where the register check reads the licence
        for cid, member, dest, issued, carats, usd, hs, licence, _ in each():
            expiry = (date.fromisoformat(issued) + timedelta(days=59)).isoformat()
            body = json.dumps({
                "certificate_id": cid, "issuing_member": member, "destination": dest,
                "exporter": {"name": "Exporter", "address": "1 Road", "country": member,
                             "licence_no": licence},
                "importer": {"name": "Importer", "address": "2 Quay", "country": dest,
                             "licence_no": "IMP-1"},
                "parcels": [{"parcel_no": 1, "hs_code": hs, "carats": carats, "value_usd": usd}],
            })  # fmt: skip
            yield (f"{cid}\t{member}\tXS\t{member}\t{dest}\tREGIONAL\tUNMIXED\t{{{member}}}"
                   f"\t{issued}\t{expiry}\t1\t{carats}\t{usd}\t{body}\t\\\\x00\tISSUED"
                   f"\t{_ZERO_ID}\n")  # fmt: skip

    def registry_parcels() -> Iterator[str]:
        for cid, member, _, _, carats, usd, hs, _, mine in each():
            yield f"{cid}\t1\t{hs}\t{carats}\t{usd}\t{member}\t{mine}\n"

    _copy(conn, "recon.certificates", certs())
    _copy(conn, "recon.parcels", parcels())
    _copy(conn, "recon.confirmations", confirmations())
    _copy(conn, "certificates (certificate_id, producer, issuing_participant, issuing_member,"
          " destination, scope, origin_type, origin_countries, date_of_issue, date_of_expiry,"
          " number_of_parcels, total_carats, total_value_usd, body, content_hash, state,"
          " event_id)", registry_certs())  # fmt: skip
    _copy(conn, "parcels (certificate_id, parcel_no, hs_code, carats, value_usd,"
          " origin_country, producer_id)", registry_parcels())  # fmt: skip
    _extras(conn, n)


def _extras(conn: Connection, n: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO recon.production (event_id, participant, period, producer_id, carats,"
            " value_usd) SELECT gen_random_uuid(), m, y || '-H' || h, 'MINE', %s, 0"
            " FROM unnest(%s::text[]) m, generate_series(2024, 2026) y, generate_series(1, 2) h",
            (n * 400, list(MEMBERS)),
        )
        # Every member's exporters and mines, registered before the first certificate, and
        # each mine's declared production, more than it exports.
        cur.execute(
            "INSERT INTO register_entries (member, entry_id, kind, name, licence_no, valid_from,"
            " event_id) SELECT m, k || '-' || m || '-' || i, kind, 'Licensee',"
            " k || '-' || m || '-' || i, '2020-01-01', gen_random_uuid()"
            " FROM unnest(%s::text[]) m,"
            " (VALUES ('EXP', 'EXPORTER', %s), ('MINE', 'MINE', %s)) t(k, kind, count),"
            " LATERAL generate_series(0, t.count - 1) i",
            (list(MEMBERS), EXPORTERS, MINES),
        )
        cur.execute(
            "INSERT INTO production (event_id, participant, period, producer_id, carats,"
            " value_usd) SELECT gen_random_uuid(), entry.member, y || '-H' || h, entry.entry_id,"
            " %s, 0 FROM register_entries entry, generate_series(2024, 2026) y,"
            " generate_series(1, 2) h WHERE entry.kind = 'MINE'",
            (n * 400,),
        )
        cur.execute(
            "INSERT INTO recon.voids (certificate_id, voided_on, event_id)"
            " SELECT certificate_id, date_of_issue, event_id FROM recon.certificates"
            " TABLESAMPLE SYSTEM (0.1) ON CONFLICT DO NOTHING"
        )
        cur.execute(
            "INSERT INTO sequence_gap_ranges (producer, first_sequence, last_sequence,"
            " detected_at) VALUES ('BW', 100, 120, '2026-09-01')"
        )
        cur.execute("SELECT setval('recon.confirmations_seq_seq', %s)", (n + 1,))
    conn.commit()
    # A registry that holds a million certificates has had them vacuumed (autovacuum) long
    # before anyone reconciles them; rows just COPYed have not, and the first query to read
    # each would pay for marking it visible. Both the before and after figures load this way.
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
    finally:
        conn.autocommit = False


def _reconcile(dsn: str, results: Any) -> None:
    """In a fresh child process: what ``kpx reconcile --as-of`` does; its time and VmHWM."""
    region = load_region(REGION_FILE)
    signer = generate_key("XS-RECONCILER")
    started = time.monotonic()
    summary = service.reconcile_as_of(dsn, region, default_store(), signer, AS_OF)
    seconds = time.monotonic() - started
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    results.put((seconds, summary.raised, peak / 1024))


def _timed_child(dsn: str) -> tuple[float, dict[str, int], float]:
    """(seconds, raised per kind, peak RSS MiB) of one reconcile in a spawned process, whose
    peak is the reconcile's alone (not this process's bulk load)."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_reconcile, args=(dsn, results))
    child.start()
    seconds, raised, peak = results.get()
    child.join()
    return seconds, raised, peak


def _count(conn: Connection, query: str) -> int:
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    conn.commit()
    return int(row[0]) if row else 0


_NOTICES = "SELECT count(*) FROM outbox WHERE relay = 'XS-RECONCILER'"


def run(n: int = 1_000_000, *, keep: bool = False) -> dict[str, Any]:
    """Load ``n`` certificates into a scratch database, reconcile twice; return the figures."""
    name = f"kpx_bench_recon_{os.getpid()}_{n}"
    create_database(SERVER, name)
    dsn = dsn_for(SERVER, name)
    try:
        conn = connect(dsn)
        migrate(conn, "exchange.registry")
        service.prepare(dsn)
        started = time.monotonic()
        load(conn, n)
        load_seconds = time.monotonic() - started
        first_seconds, first, first_peak = _timed_child(dsn)
        notices = _count(conn, _NOTICES)
        second_seconds, second, second_peak = _timed_child(dsn)
        notices_on_rerun = _count(conn, _NOTICES) - notices
        conn.close()
    finally:
        if not keep:
            drop_database(SERVER, name)
    return {
        "certificates": n,
        "load_seconds": round(load_seconds, 1),
        "reconcile_seconds": round(first_seconds, 1),
        "rerun_seconds": round(second_seconds, 1),
        "raised": first,
        "notices": notices,
        "raised_on_rerun": sum(second.values()),
        "notices_on_rerun": notices_on_rerun,
        "peak_rss_mib": round(first_peak, 1),
        "rerun_peak_rss_mib": round(second_peak, 1),
    }


TARGET_SECONDS = 45.0


def rows(scale: float = 1.0) -> list[Row]:
    """The benchmark suite's rows: the first run at N beside the 45 s target, and the peak RSS
    at N beside the peak at N / 10 (flat: at most 1.1 times)."""
    big = max(1_000, int(1_000_000 * scale))
    small_result, big_result = run(big // 10), run(big)
    seconds, peak = big_result["reconcile_seconds"], big_result["peak_rss_mib"]
    small_peak = small_result["peak_rss_mib"]
    return [
        Row(f"kpx reconcile --as-of, {big:,} certificates, first run", seconds, "s",
            goal=f"< {TARGET_SECONDS:.0f} s", met=seconds < TARGET_SECONDS,
            note=", ".join(f"{k} {v}" for k, v in big_result.items())),
        Row(f"kpx reconcile --as-of, {big:,} certificates, re-run", big_result["rerun_seconds"],
            "s", goal="raises and seals nothing",
            met=big_result["raised_on_rerun"] == 0 and big_result["notices_on_rerun"] == 0),
        Row(f"reconcile peak RSS (VmHWM), {big:,} certificates", peak, "MiB",
            ceiling=small_peak, ceiling_what=f"the same at {big // 10:,}", goal="≤ 1.1 (flat)",
            met=peak <= 1.1 * small_peak,
            note=", ".join(f"{k} {v}" for k, v in small_result.items())),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(json.dumps(run(args.certificates, keep=args.keep), indent=2))


if __name__ == "__main__":
    main()
