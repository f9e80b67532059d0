"""``python -m benchmarks [--scale F]``: run every benchmark, write benchmarks/RESULTS.md.

Runs the ceilings, the relay, the naive baseline and the fuzz loop, then
``benchmarks.registry_bench.run`` and ``benchmarks.reconcile_bench.run`` when those modules
exist (skipped with a note otherwise), and writes one table — what, figure, ceiling, ratio,
goal, met — with the machine and the date. ``--scale`` multiplies every size (0.25 for a
quick look); the default takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from benchmarks import (
    ROOT,
    Row,
    amqp_admin_url,
    ceilings,
    database_server_url,
    fuzz,
    naive_baseline,
    relay_bench,
)
from exchange.admin import management_url

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RELAY_LIMIT = (
    "The relay is stop-and-wait per batch: it reads up to 1,000 rows, publishes them (the "
    "window), waits for every confirm, marks them sent and commits, and only then reads the "
    "next batch. A profile (cProfile on the relay and IO threads, 20,000 events) shows the "
    "SELECT + UPDATE + COMMIT of each batch at about a third of the wall time with nothing in "
    "flight; the rest is pika's per-message frame marshalling, the same cost the ceiling pays. "
    "Batch size 3,000 instead of 1,000 changes nothing, so the window is not the limit. The "
    "fix is to pipeline: read and publish batch k+1 while batch k's confirms arrive, and mark "
    "batch k sent on its own connection."
)


def machine() -> dict[str, str]:
    """nproc, RAM, kernel, RabbitMQ and PostgreSQL versions."""
    with open("/proc/meminfo") as meminfo:
        kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    info = {
        "cores (nproc)": str(os.cpu_count()),
        "RAM": f"{kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
    }
    base, auth = management_url(amqp_admin_url(), os.environ.get("KPX_AMQP_MANAGEMENT_URL"))
    try:
        overview = httpx.get(base + "/api/overview", auth=auth, timeout=10).json()
        info["RabbitMQ"] = f"{overview['rabbitmq_version']} (Erlang {overview['erlang_version']})"
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        info["RabbitMQ"] = f"unknown ({exc})"
    conn = psycopg2.connect(database_server_url())
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            info["PostgreSQL"] = cur.fetchone()[0]
    finally:
        conn.close()
    return info


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(f"benchmarks.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{module}":
            raise
        return None


def registry_rows(result: dict[str, float], publish: float, naive: float) -> list[Row]:
    """The registry benchmark's dict as rows: beside its ceiling, the publish ceiling, naive."""
    rate = result["registry_per_s"]
    return [
        Row("registry ingest, end to end (decode, verify, rules, commit, outbox)", rate,
            "events/s", ceiling=result["raw_per_s"],
            ceiling_what="pika consume + 500-row batched insert, same run", goal="≥ 0.5",
            met=rate >= 0.5 * result["raw_per_s"], note=f"{int(result['n']):,} events"),
        Row("registry ingest vs raw publish ceiling", rate, "events/s", ceiling=publish,
            ceiling_what="pika async-confirm publish, same run", goal="≥ 0.5",
            met=rate >= 0.5 * publish),
        Row("registry ingest vs naive baseline", rate / naive, "×", goal="≥ 5×",
            met=rate >= 5 * naive, note=f"naive {naive:,.0f} events/s"),
    ]  # fmt: skip


def reconcile_rows(result: dict[str, Any]) -> list[Row]:
    """The reconciler benchmark's dict as one row."""
    n = result.get("certificates", 0)
    seconds = float(result.get("reconcile_seconds", 0.0))
    rest = ", ".join(f"{k} {v}" for k, v in result.items())
    return [Row(f"reconcile {n:,} certificates", seconds, "s", note=rest)]


def run_all(scale: float) -> tuple[list[Row], list[str]]:
    """Every benchmark; (rows, notes)."""
    rows: list[Row] = []
    notes: list[str] = []

    def step(name: str, fn: Callable[[], list[Row]]) -> list[Row]:
        started = time.monotonic()
        print(f"benchmarks: {name} …", flush=True)
        try:
            produced = fn()
        except Exception as exc:
            traceback.print_exc()
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
            return []
        print(f"benchmarks: {name} done in {time.monotonic() - started:.0f} s", flush=True)
        rows.extend(produced)
        return produced

    size = lambda n: max(100, int(n * scale))  # noqa: E731
    ceiling = step("ceilings", lambda: ceilings.run(size(20_000)))
    publish = ceiling[0].figure if ceiling else 0.0
    relay = step("relay_bench", lambda: relay_bench.run(size(20_000)))
    if relay and relay[0].met is False:
        notes.append(f"Relay below 0.7 × the publish ceiling. {RELAY_LIMIT}")
    naive = step("naive_baseline", lambda: naive_baseline.run(size(2_000)))
    naive_rate = naive[0].figure if naive else 0.0
    step("fuzz", lambda: fuzz.run(max(100_000, size(100_000))))
    registry = _optional("registry_bench")
    if registry is None:
        notes.append("benchmarks.registry_bench is missing: registry figures skipped.")
    else:
        step("registry_bench", lambda: registry_rows(
            registry.run(size(20_000)), publish, naive_rate or float("nan")))  # fmt: skip
    reconcile = _optional("reconcile_bench")
    if reconcile is None:
        notes.append("benchmarks.reconcile_bench is missing: reconciler figures skipped.")
    else:
        step("reconcile_bench", lambda: reconcile_rows(reconcile.run(size(100_000))))
    return rows, notes


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def render(rows: list[Row], notes: list[str], info: dict[str, str], elapsed: float) -> str:
    """RESULTS.md: the machine, the date, the table, the notes."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# kpx benchmark results",
        "",
        f"Written by `python -m benchmarks` on {now} in {elapsed / 60:.1f} minutes. Every "
        "ceiling was measured in the same run, on the same machine, with the services shared "
        "by whatever else ran on it (timings are noisy).",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "| what | figure | ceiling | ratio | goal | met? |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        ceiling = f"{_number(row.ceiling, row.unit)} ({row.ceiling_what})" if row.ceiling else ""
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {row.what} | {_number(row.figure, row.unit)} | {ceiling} | {ratio} | "
            f"{row.goal} | {met} |"
        )
    details = [f"- {row.what}: {row.note}" for row in rows if row.note]
    lines += ["", "## Details", "", *details]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the table")
    args = parser.parse_args(argv)
    started = time.monotonic()
    info = machine()
    rows, notes = run_all(args.scale)
    args.output.write_text(render(rows, notes, info, time.monotonic() - started))
    print(f"benchmarks: wrote {args.output}")
    return 1 if any("failed" in n for n in notes) else 0


if __name__ == "__main__":
    sys.exit(main())
