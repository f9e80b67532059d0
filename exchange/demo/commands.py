"""``kpx demo``: the demo's composition root.

Sets up the private region, starts the services as processes, drives the plan with a live
view, drains, reconciles as of the plan's date, prints statistics and the found-vs-seeded
score, and stops everything (SIGTERM, exit codes 0) unless ``--keep``. Ctrl-C (or SIGTERM to
the demo) stops everything cleanly too. Exit 0 only when no service crashed, every service
exited 0 and precision and recall are both 1.0.

This module is, like ``exchange/app/cli.py``, a composition root: it is the one place of the demo
that imports ``nodes`` (to apply operations as each node's authority, as ``kpx node submit``
does), and it hands plain callables to the driver.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from exchange.adapters import postgres
from exchange.app.exits import ExitCode
from exchange.app.quiescence import wait_drained
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from exchange.errors import ServiceFailed
from exchange.messaging.outbox import OutboxWriter
from exchange.reconciler.service import reconcile_as_of
from exchange.wire import topology

from . import portal, setup
from .anomalies import KINDS, make_plan
from .driver import Driver, Submit
from .monitor import Monitor
from .processes import PORTAL_PORT, Fleet, kept_alive, kpx_command, services
from .report import print_final, progress
from .score import Score, score
from .traffic import Plan, load_profiles

TICK = 0.5
PORTAL_URL = f"http://127.0.0.1:{PORTAL_PORT}"
DRAIN_TIMEOUT = 90.0
DEFER_TIMEOUT = 30.0  # how long an operation may wait for the registry after the traffic
# A ready officer on every node web app: the demo region is private and lives minutes.
DEMO_USER, DEMO_PASSWORD = "officer", "kpx-demo-officer"
# Four eyes (DESIGN §13): a clerk drafts, the officer authorises; the demo has one of each.
DEMO_CLERK, DEMO_CLERK_PASSWORD = "clerk", "kpx-demo-clerk"


@click.command("demo")
@click.option(
    "--duration",
    type=click.FloatRange(5, 3600),
    default=45.0,
    show_default=True,
    help="Seconds of simulated trade.",
)
@click.option(
    "--rate",
    type=click.FloatRange(1, 500),
    default=20.0,
    show_default=True,
    help="Certificates per second.",
)
@click.option(
    "--members", default="all", show_default=True, help="Comma-separated member codes, or 'all'."
)
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of the plan.")
@click.option("--keep", is_flag=True, help="Leave the services running at the end.")
@click.option(
    "--serve/--no-serve",
    default=None,
    help="After the report, keep the region up for you to click through until Ctrl-C "
    "(default: when run in a terminal).",
)
def demo(
    duration: float, rate: float, members: str, seed: int, keep: bool, serve: bool | None
) -> None:
    """A simulated region on real KP figures: live progress, then the final report."""
    console = Console()
    base = Settings.from_env(region=str(setup.EXAMPLE))
    chosen = _members(members, setup.example_region())
    folder = setup.demo_dir(base.state_dir.resolve())
    _refuse_a_kept_demo(folder)
    with console.status("setting up the private region kpx_demo …"):
        rt = setup.prepare(dataclasses.replace(base, state_dir=base.state_dir.resolve()), chosen)
    plan = _plan(rt, seed, duration, rate, chosen)
    fleet = Fleet(
        services(rt.settings.region_path, list(rt.region.node_codes)),
        _service_env(rt),
        folder / "logs",
    )
    stay = sys.stdin.isatty() and sys.stdout.isatty() if serve is None else serve
    sys.exit(_guarded(console, fleet, lambda: _run(console, rt, plan, fleet, (keep, stay), folder)))


def _refuse_a_kept_demo(folder: Path) -> None:
    still = kept_alive(folder / "pids")
    if still:
        pids = " ".join(map(str, still))
        click.echo(f"kpx demo: a kept demo still runs; stop it first: kill -TERM {pids}", err=True)
        sys.exit(ExitCode.FAILED)


def _plan(rt: Runtime, seed: int, duration: float, rate: float, chosen: list[str]) -> Plan:
    return make_plan(
        seed=seed,
        duration=duration,
        rate=rate,
        members=chosen,
        partners=[p.code for p in rt.region.partners],
        profiles=load_profiles(),
        policy=rt.region.policy,
        today=datetime.now(UTC).date(),
    )


def _guarded(console: Console, fleet: Fleet, run: Callable[[], int]) -> int:
    """Run the demo; Ctrl-C, SIGTERM or an error stop every service before leaving."""
    with _stop_on_sigterm():
        try:
            return run()
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping every service …")
            _stop(console, fleet)
            return ExitCode.INTERRUPTED
        except Exception:
            _stop(console, fleet)  # never leave services behind on an error
            raise


def _members(option: str, example: dict[str, Any]) -> list[str]:
    known = list(example["members"])
    if option.strip().lower() == "all":
        return known
    chosen = [c.strip().upper() for c in option.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown or not chosen:
        raise click.BadParameter(
            f"choose among {', '.join(known)}; got {option!r}", param_hint="--members"
        )
    return chosen


def _service_env(rt: Runtime) -> dict[str, str]:
    env = rt.settings.child_env()
    env["PYTHONUNBUFFERED"] = "1"  # the services' log lines reach their files as written
    return env


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM to the demo behaves like Ctrl-C: stop the services, then exit."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(
    console: Console,
    rt: Runtime,
    plan: Plan,
    fleet: Fleet,
    ending: tuple[bool, bool],
    folder: Path,
) -> int:
    """Run the demo; ``ending`` is (leave the services running, serve them until Ctrl-C)."""
    keep, stay = ending
    if not _start(console, rt, fleet, folder):
        return 1
    webs = ", ".join(s.metrics_url for s in fleet.services if s.name.startswith("web "))
    console.print(_web_line(webs))
    kpx = [*kpx_command(), "--region", str(rt.settings.region_path)]
    user = portal.ready_user(kpx, _service_env(rt))
    console.print("\n".join(portal.lines(PORTAL_URL, user, None)))
    monitor = Monitor(rt)
    try:
        driver = _drive(console, rt, plan, fleet, monitor)
        drained = _drain(console, rt)
        result, stats = _reconcile(console, rt, plan)
        print_final(console, plan, driver, monitor.read(), stats, result, fleet.services)
        sample = portal.sample_certificate(rt.registry_dsn)
        console.print("\n".join(portal.lines(PORTAL_URL, user, sample)))
        console.print(_web_line(webs))
    finally:
        monitor.close()
    problems = _problems(result, drained, fleet, driver)
    if stay and not keep:
        _serve_until_interrupted(console)
    problems += _finish(console, fleet, keep)
    verdict = (
        "[green]kpx demo: ok" if not problems else f"[red]kpx demo: FAILED — {'; '.join(problems)}"
    )
    console.print(verdict)
    return 0 if not problems else 1


def _start(console: Console, rt: Runtime, fleet: Fleet, folder: Path) -> bool:
    """Create the demo's users, start every service and wait until each answers."""
    _demo_users(rt)
    fleet.start()
    fleet.write_pids(folder / "pids")
    with console.status(
        f"starting the registry, the reconciler and {len(rt.region.node_codes)} nodes …"
    ):
        problems = fleet.wait_ready(90.0)
    if problems:
        console.print(f"[red]services did not start: {'; '.join(problems)} (logs in {fleet.logs})")
        _stop(console, fleet)
    return not problems


def _finish(console: Console, fleet: Fleet, keep: bool) -> list[str]:
    """Leave the services running (``--keep``) or stop them; a non-zero exit is a problem."""
    if keep:
        _print_keep(console, fleet)
        return []
    codes = _stop(console, fleet)
    return [f"{name} exited with {c}" for name, c in codes.items() if c != 0]


def _demo_users(rt: Runtime) -> None:
    """A ready officer on every node web app, so a first-time user can click through."""
    from nodes.web import access  # the demo's composition root: see the module notes

    for code in rt.region.node_codes:
        conn = postgres.connect(rt.node_dsn(code), application_name="kpx-demo")
        try:
            with postgres.transaction(conn) as cur:
                access.add_user(cur, DEMO_USER, "officer", DEMO_PASSWORD, "Demo Officer")
                access.add_user(cur, DEMO_CLERK, "clerk", DEMO_CLERK_PASSWORD, "Demo Clerk")
        finally:
            conn.close()


def _problems(result: Score, drained: bool, fleet: Fleet, driver: Driver) -> list[str]:
    """Why the run failed, if it did."""
    problems = (
        [] if result.perfect else [f"precision {result.precision:.2f}, recall {result.recall:.2f}"]
    )
    problems += [] if drained else ["the region did not drain"]
    problems += [f"{name} crashed (exit {c})" for name, c in fleet.crashed()]
    problems += [f"{len(driver.refused)} operation(s) refused"] if driver.refused else []
    return problems


def _drive(console: Console, rt: Runtime, plan: Plan, fleet: Fleet, monitor: Monitor) -> Driver:
    submit, skip, voided, close = _node_access(rt)
    driver = Driver(plan, submit, skip, voided)
    before = now = monitor.read()
    start = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                elapsed = time.monotonic() - start
                driver.step(elapsed)
                if elapsed - (now.at - start) >= 1.0 or now is before:
                    before, now = now, monitor.read()
                live.update(progress(plan, driver, now, before, elapsed, "trading"))
                if fleet.crashed():
                    raise ServiceFailed(f"a service crashed: {fleet.crashed()}")
                late = elapsed > plan_duration(plan) + DEFER_TIMEOUT
                if driver.finished or late:
                    break
                time.sleep(TICK)
    finally:
        close()
    return driver


def plan_duration(plan: Plan) -> float:
    """When the plan's last operation is due."""
    return max((op.at for op in plan.ops), default=0.0)


def _node_access(
    rt: Runtime,
) -> tuple[Submit, Callable[[str], None], Callable[[str], bool], Callable[[], None]]:
    """submit / skip_sequence / is_voided callables on the nodes' and registry's databases."""
    from nodes.operations import Node  # the demo's composition root: see the module notes

    codes = rt.region.node_codes
    conns = {c: postgres.connect(rt.node_dsn(c), application_name="kpx-demo") for c in codes}
    nodes = {c: Node(c, rt.region, OutboxWriter(rt.store, rt.signer(c))) for c in codes}
    registry = postgres.connect(rt.registry_dsn, application_name="kpx-demo")

    def submit(code: str, lines: list[str]) -> list[tuple[bool, str]]:
        return [(r.ok, str(r)) for r in nodes[code].submit(conns[code], lines)]

    def skip_sequence(code: str) -> None:
        # An event lost for good: its sequence number is taken but never published.
        with postgres.transaction(conns[code]) as cur:
            cur.execute(
                "INSERT INTO producer_sequence (producer, last_sequence) VALUES (%s, 1) "
                "ON CONFLICT (producer) DO UPDATE "
                "SET last_sequence = producer_sequence.last_sequence + 1",
                (code,),
            )

    def is_voided(certificate_id: str) -> bool:
        with postgres.transaction(registry) as cur:
            cur.execute(
                "SELECT state FROM certificates WHERE certificate_id = %s", (certificate_id,)
            )
            row = cur.fetchone()
        return row is not None and row[0] in ("VOIDED", "REPLACED")

    def close() -> None:
        for conn in [*conns.values(), registry]:
            conn.close()

    return submit, skip_sequence, is_voided, close


def _drain(console: Console, rt: Runtime) -> bool:
    with console.status("waiting for the region to drain (outboxes, queues, reconciler) …"):
        drained = wait_drained(rt, DRAIN_TIMEOUT)
    if not drained:
        console.print(f"[red]the region did not drain within {DRAIN_TIMEOUT:.0f} s")
    return drained


def _kpx(rt: Runtime, *args: str) -> str:
    """Run a kpx command on the demo region; its stdout (ServiceFailed on failure)."""
    argv = [*kpx_command(), "--region", str(rt.settings.region_path), *args]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=_service_env(rt), timeout=120, check=False
    )
    if done.returncode != 0:
        raise ServiceFailed(f"kpx {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _reconcile(console: Console, rt: Runtime, plan: Plan) -> tuple[Score, dict[str, Any] | None]:
    as_of = plan.timeline.as_of.isoformat()
    with console.status(f"reconciling as of the simulated day {as_of} …"):
        if plan.trade_csv:  # the external trade figures (§14), imported before reconciling
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp, "external-trade.csv")
                path.write_text(plan.trade_csv, encoding="utf-8")
                _kpx(rt, "registry", "import-trade", str(path), "--source", "demo-external")
        # In-process, not `kpx reconcile`: the simulated day is after today, which the command
        # refuses to an operator (a future day would raise deadlines not yet passed).
        producer = topology.reconciler_producer(rt.region.code)
        reconcile_as_of(
            rt.registry_dsn, rt.region, rt.store, rt.signer(producer), plan.timeline.as_of
        )
        found = json.loads(_kpx(rt, "registry", "discrepancies", "--json"))
        stats = json.loads(
            _kpx(rt, "stats", "--period", plan.timeline.clean.name, "--format", "json")
        )
    return score(plan.expected, found, KINDS), stats


def _stop(console: Console, fleet: Fleet) -> dict[str, int]:
    with console.status("stopping the services (SIGTERM, draining) …"):
        codes = fleet.stop()
    text = ", ".join(f"{name} {code}" for name, code in codes.items())
    style = "green" if all(c == 0 for c in codes.values()) else "red"
    console.print(f"[{style}]stopped; exit codes: {text}")
    return codes


def _web_line(webs: str) -> str:
    return (
        f"node web apps (officer {DEMO_USER} / {DEMO_PASSWORD}, "
        f"clerk {DEMO_CLERK} / {DEMO_CLERK_PASSWORD}): {webs}"
    )


def _serve_until_interrupted(console: Console) -> None:
    """Keep the region up for a first-time user to open the URLs above; Ctrl-C ends it."""
    console.print("[bold]the region stays up: open the URLs above; press Ctrl-C to stop it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping every service …")


def _print_keep(console: Console, fleet: Fleet) -> None:
    pids = " ".join(str(s.proc.pid) for s in fleet.services if s.proc is not None)
    console.print(f"services left running (--keep); stop them with:  kill -TERM {pids}")
