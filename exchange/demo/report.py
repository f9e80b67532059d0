"""Rich output of ``kpx demo``: the live progress table and the final report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from .driver import Driver
from .monitor import Snapshot
from .processes import Service
from .score import Score
from .traffic import Plan


def progress(
    plan: Plan, driver: Driver, now: Snapshot, before: Snapshot, elapsed: float, phase: str
) -> Panel:
    """The live view: what was submitted, what the registry accepted, what is in flight."""
    rate = (now.events - before.events) / max(1e-3, now.at - before.at)
    t = Table.grid(padding=(0, 3))
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column(style="bold")
    t.add_column(justify="right")
    done = driver.done_ops
    t.add_row(
        "certificates issued",
        f"{done['issue']} / {plan.count('issue')}",
        "accepted by the registry",
        str(now.accepted),
    )
    t.add_row(
        "imports confirmed",
        f"{done['confirm_import']} / {plan.count('confirm_import')}",
        "confirmations recorded",
        str(now.confirmations),
    )
    t.add_row(
        "production declared", f"{done['declare_production']}", "rejected events", str(now.rejected)
    )
    t.add_row("in flight (outboxes)", str(now.backlog), "in flight (queues)", str(now.queued))
    t.add_row("discrepancies so far", str(now.discrepancies), "events/s", f"{rate:,.0f}")
    if driver.refused:
        t.add_row("[red]refused operations", str(len(driver.refused)), "", "")
    title = f"kpx demo — seed {plan.seed} — {phase} — {elapsed:5.1f} s"
    return Panel(t, title=title, border_style="cyan")


def statistics_table(stats: Mapping[str, Any]) -> Table:
    """Per participant: exports, imports and production of the period (``kpx stats`` json)."""
    t = Table(title=f"KP statistics {stats.get('period')} (version {stats.get('version')})")
    for col in (
        "",
        "export ct",
        "export $m",
        "$/ct",
        "certs",
        "import ct",
        "import $m",
        "produced ct",
    ):
        t.add_column(col, justify="right")
    figures: dict[str, dict[str, Any]] = {}
    for r in stats.get("rows", []):
        who = figures.setdefault(str(r["participant"]), {})
        if r["flow"] in ("export", "import") and r["by"] == "total":
            who[r["flow"]] = r
        elif r["flow"] == "production":
            who["produced"] = _dec(who.get("produced")) + _dec(r["carats"])
    for code, f in sorted(figures.items()):
        ex, im = f.get("export", {}), f.get("import", {})
        t.add_row(
            code,
            _ct(ex.get("carats")),
            _musd(ex.get("value_usd")),
            _ct(ex.get("usd_per_carat")),
            str(ex.get("certificates") or ""),
            _ct(im.get("carats")),
            _musd(im.get("value_usd")),
            _ct(f.get("produced")),
        )
    return t


def _dec(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def _ct(value: Any) -> str:
    return "" if value in (None, "") else f"{_dec(value):,.0f}"


def _musd(value: Any) -> str:
    return "" if value in (None, "") else f"{_dec(value) / 1_000_000:,.2f}"


def score_table(result: Score) -> Table:
    """Found against seeded, per kind."""
    t = Table(title="Discrepancies: found vs seeded (exact key match)")
    for col in ("kind", "seeded", "found", "matched", "precision", "recall"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for k in result.kinds:
        precision = "—" if k.found == 0 else f"{k.matched_found / k.found:.2f}"
        recall = "—" if k.seeded == 0 else f"{k.matched_seeded / k.seeded:.2f}"
        style = "" if k.found == k.matched_found and k.seeded == k.matched_seeded else "red"
        t.add_row(
            k.kind,
            str(k.seeded),
            str(k.found),
            str(k.matched_found),
            precision,
            recall,
            style=style,
        )
    total_found = sum(k.found for k in result.kinds)
    total_seeded = sum(k.seeded for k in result.kinds)
    t.add_row(
        "TOTAL",
        str(total_seeded),
        str(total_found),
        str(sum(k.matched_found for k in result.kinds)),
        f"{result.precision:.2f}",
        f"{result.recall:.2f}",
        style="bold",
    )
    return t


def print_final(
    console: Console,
    plan: Plan,
    driver: Driver,
    final: Snapshot,
    stats: Mapping[str, Any] | None,
    result: Score,
    fleet: Sequence[Service],
) -> None:
    """The whole final report."""
    console.rule("[bold]kpx demo — final report")
    _print_run(console, plan, driver, final)
    if stats is not None:
        console.print(statistics_table(stats))
    console.print(score_table(result))
    _print_mistakes_and_totals(console, result)
    console.print(_metrics_panel(fleet))


def _print_run(console: Console, plan: Plan, driver: Driver, final: Snapshot) -> None:
    """What was simulated and submitted, what the registry made of it, and any refusals."""
    tl = plan.timeline
    console.print(
        f"simulated trade {tl.clean.first} .. {tl.clean.last} ({tl.clean.name}) and seeded "
        f"anomalies in {tl.open_quarter.name}; reconciled as of {tl.as_of}"
    )
    console.print(
        f"submitted {driver.done_ops['issue']} certificates, {driver.done_ops['confirm_import']}"
        f" import confirmations, {driver.done_ops['declare_production']} production declarations,"
        f" {driver.done_ops['void']} void(s); registry: {final.accepted} certificates accepted, "
        f"{final.confirmations} confirmations, {final.rejected} events rejected, "
        f"{final.dead} dead letters"
    )
    for line in driver.refused:
        console.print(f"[red]refused: {line}")


def _print_mistakes_and_totals(console: Console, result: Score) -> None:
    """Each false positive and each miss, then the totals and precision and recall."""
    for item in result.false_positives:
        what = item.get("certificate_id") or f"{item.get('participants')} {item.get('period')}"
        console.print(f"[red]false positive[/] {item['kind']} {what}: {item['detail']}")
    for e in result.missed:
        console.print(
            f"[red]missed[/] {e.kind} {e.certificate_id or ''} {list(e.participants)} "
            f"{e.period or ''}: {e.story}"
        )
    seeded = sum(k.seeded for k in result.kinds)
    console.print(
        f"found {seeded - len(result.missed)} of {seeded} seeded anomalies, "
        f"{len(result.false_positives)} false positive(s)"
    )
    console.print(f"precision {result.precision:.2f}  recall {result.recall:.2f}", style="bold")


def _metrics_panel(fleet: Sequence[Service]) -> Panel:
    """Each service's metrics URL, in a panel."""
    urls = Table.grid(padding=(0, 2))
    for s in fleet:
        urls.add_row(s.name, s.metrics_url)
    return Panel(Group(urls), title="metrics", border_style="cyan")
