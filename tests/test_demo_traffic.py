"""The demo's plan is deterministic, passes the rules, and seeds exactly one of every kind.

The strongest test here replays the plan through the pure reconciliation rules
(exchange.domain.discrepancy) the way the reconciler applies them — event-time findings per
certificate, then the as-of checks — and requires exactly the seeded keys: clean traffic
must raise nothing (precision 1.0) and every seed must raise its kind (recall 1.0).
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from exchange.demo import setup
from exchange.demo.anomalies import KINDS, make_plan
from exchange.demo.score import score
from exchange.demo.timeline import Timeline
from exchange.demo.traffic import Plan, key_of, load_profiles
from exchange.domain import rules
from exchange.domain.certificate import CertificateDraft, sum_of
from exchange.domain.certnumber import is_well_formed
from exchange.domain.discrepancy import (
    CertificateFacts,
    ConfirmationFacts,
    Flow,
    Limits,
    certificate_findings,
    mirror_differences,
    mirror_finding,
    past_deadline,
    period_closed,
)
from exchange.domain.events import DiscrepancyKind, ImportConfirmation, ProductionDeclaration
from exchange.domain.kpstats import Period, half_year_of, quarter_of
from exchange.domain.region import Region, load_region
from exchange.domain.register import (
    Register,
    RegisterEntry,
    unlicensed_exporter,
    unregistered_declaration,
    unregistered_parcel,
)
from exchange.domain.supply import SupplyPeriod, producer_exceeded, supply_balances
from exchange.domain.trade import Parsed, read_trade
from exchange.domain.valuation import is_outlier, log_price, spread

REGION: Region = load_region(setup.EXAMPLE)
MEMBERS = [m.code for m in REGION.members]
PARTNERS = [p.code for p in REGION.partners]
TODAY = date(2026, 11, 28)


def plan_for(
    seed: int = 2026,
    *,
    duration: float = 45,
    rate: float = 20,
    members: list[str] | None = None,
    today: date = TODAY,
) -> Plan:
    return make_plan(
        seed=seed,
        duration=duration,
        rate=rate,
        members=members or MEMBERS,
        partners=PARTNERS,
        profiles=load_profiles(),
        policy=REGION.policy,
        today=today,
    )


# ---------------------------------------------------------------- a pure reconciler


def certificates(plan: Plan) -> dict[str, tuple[CertificateFacts, dict[str, Any]]]:
    voided = {
        o.body["certificate_id"]: date.fromisoformat(o.body["voided_on"])
        for o in plan.ops
        if o.body["op"] == "void"
    }
    out = {}
    for o in plan.ops:
        if o.body["op"] != "issue":
            continue
        c = o.body["certificate"]
        out[c["certificate_id"]] = (
            CertificateFacts(
                c["certificate_id"],
                o.node,
                c["destination"],
                date.fromisoformat(c["date_of_expiry"]),
                len(c["parcels"]),
                sum_of(Decimal(p["carats"]) for p in c["parcels"]),
                sum_of(Decimal(p["value_usd"]) for p in c["parcels"]),
                voided_on=voided.get(c["certificate_id"]),
            ),
            c,
        )
    return out


def confirmations(plan: Plan) -> dict[str, list[ConfirmationFacts]]:
    out: dict[str, list[ConfirmationFacts]] = defaultdict(list)
    for i, o in enumerate(plan.ops):
        b = o.body
        if b["op"] == "confirm_import":
            out[b["certificate_id"]].append(
                ConfirmationFacts(
                    str(i),
                    b["certificate_id"],
                    b["issuing_participant"],
                    o.node,
                    date.fromisoformat(b["received_on"]),
                    b["parcels"],
                    Decimal(b["carats"]),
                    Decimal(b["value_usd"]),
                    b["seal_intact"],
                )
            )
    return out


def findings(plan: Plan) -> set[tuple[str, str, str]]:
    """Every key the reconciler raises for this plan after one as-of run."""
    limits, as_of = Limits.from_policy(REGION.policy), plan.timeline.as_of
    certs, confs = certificates(plan), confirmations(plan)
    keys = set()
    for cid in set(certs) | set(confs):
        facts = certs[cid][0] if cid in certs else None
        for d in certificate_findings(facts, confs.get(cid, []), limits, "XS", MEMBERS):
            keys.add(key_of(d.kind, d.certificate_id, d.participants, d.period))
    for cid, (f, _) in certs.items():
        confirmed = any(c.received_on <= as_of for c in confs.get(cid, []))
        if not confirmed and f.voided_on is None and past_deadline(f.date_of_expiry, 30, as_of):
            keys.add(key_of("UNCONFIRMED_EXPIRED", cid, (), None))
    for cid, cs in confs.items():
        regional = is_well_formed(cid) and cid.startswith("XS-")
        if (
            cid not in certs
            and regional
            and any(past_deadline(c.received_on, 30, as_of) for c in cs)
        ):
            keys.add(key_of("UNKNOWN_CERTIFICATE", cid, (), None))
    keys |= outliers(plan, certs, limits)
    keys |= supply(plan, certs, limits) | mirror(plan, certs, confs, limits)
    keys |= {key_of("SEQUENCE_GAP", None, (o.node,), None) for o in plan.ops if o.skip_sequence}
    return keys | register_findings(plan, certs, limits) | trade_findings(plan, certs, limits)


def register_findings(plan: Plan, certs: Any, limits: Limits) -> set[tuple[str, str, str]]:
    """UNLICENSED_EXPORTER, UNREGISTERED_PRODUCER, PRODUCER_EXPORTS_EXCEED_PRODUCTION (§14)."""
    reg, keys = Register(), set()
    for o in plan.ops:
        if o.body["op"] == "register":
            reg.add(RegisterEntry.from_json(o.body["entry"], member=o.node))
    exported: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for cid, (f, c) in certs.items():
        if f.exporter not in MEMBERS or f.voided_on is not None:
            continue
        cert = CertificateDraft.from_json(
            c, issuing_participant="XS", issuing_member=f.exporter,
            issuing_authority="authority", members=MEMBERS,
        )  # fmt: skip
        if unlicensed_exporter(cert, reg) or unregistered_parcel(cert, reg):
            kind = (
                "UNLICENSED_EXPORTER" if unlicensed_exporter(cert, reg) else "UNREGISTERED_PRODUCER"
            )
            keys.add(key_of(kind, cid, (), None))
        for p in cert.parcels:
            if p.producer_id:
                exported[(f.exporter, p.producer_id, half_year_of(cert.date_of_issue))] += p.carats
    declared = {
        (o.node, o.body["producer"], o.body["period"]): Decimal(o.body["carats"])
        for o in plan.ops
        if o.body["op"] == "declare_production"
    }
    for member, producer, half in declared:
        if unregistered_declaration(member, producer, half, reg):
            keys.add(key_of("UNREGISTERED_PRODUCER", None, (member,), half))
    for key in set(exported) | set(declared):
        member, _, half = key
        period = SupplyPeriod(half, declared.get(key, Decimal(0)), exported.get(key, Decimal(0)))
        [b] = supply_balances([period], limits.carry_over)
        closed = period_closed(Period.parse(half), limits.grace_days, plan.timeline.as_of)
        if closed and producer_exceeded(b, limits.carats_pct):
            keys.add(key_of("PRODUCER_EXPORTS_EXCEED_PRODUCTION", None, (member,), half))
    return keys


def trade_findings(plan: Plan, certs: Any, limits: Limits) -> set[tuple[str, str, str]]:
    """NON_PARTICIPANT_TRADE and EXTERNAL_MIRROR_MISMATCH of the plan's external file."""
    book, keys = REGION.book(), set()
    nodes = {*MEMBERS, *PARTNERS, "XS"}
    for r in read_trade(plan.trade_csv.splitlines(), Parsed()):
        if r.partner not in book:
            keys.add(key_of("NON_PARTICIPANT_TRADE", None, (r.reporter, r.partner), r.period))
            continue
        kp = sum_of(
            f.total_carats for f, c in certs.values()
            if f.exporter == r.reporter and f.destination == r.partner and f.voided_on is None
            and r.first <= date.fromisoformat(c["date_of_issue"]) <= r.last
        )  # fmt: skip
        if r.reporter in nodes and mirror_differences(
            Flow(r.carats, Decimal(0), 0), Flow(kp, Decimal(0), 0), limits.mirror_pct
        ):
            keys.add(key_of("EXTERNAL_MIRROR_MISMATCH", None, (r.reporter, r.partner), r.period))
    return keys


def outliers(plan: Plan, certs: Any, limits: Limits) -> set[tuple[str, str, str]]:
    groups: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for cid, (_, c) in certs.items():
        countries = c["origin"]["countries"]
        for p in c["parcels"]:
            origin = p.get("origin_country") or (countries[0] if len(countries) == 1 else None)
            if origin:
                x = log_price(Decimal(p["value_usd"]), Decimal(p["carats"]))
                groups[(origin, p["hs_code"])].append((cid, x))
    keys = set()
    for sample in groups.values():
        s = spread([x for _, x in sample])
        keys |= {
            key_of("VALUATION_OUTLIER", cid, (), None)
            for cid, x in sample
            if is_outlier(x, s, limits.outlier_k, limits.outlier_min_sample)
        }
    return keys


def supply(plan: Plan, certs: Any, limits: Limits) -> set[tuple[str, str, str]]:
    exported: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for f, c in certs.values():
        if f.exporter in MEMBERS and f.voided_on is None:
            half = half_year_of(date.fromisoformat(c["date_of_issue"]))
            exported[(f.exporter, half)] += sum(
                Decimal(p["carats"]) for p in c["parcels"] if p.get("origin_country") == f.exporter
            )
    produced: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for o in plan.ops:
        if o.body["op"] == "declare_production":
            produced[(o.node, o.body["period"])] += Decimal(o.body["carats"])
    keys = set()
    for member in MEMBERS:
        periods = [
            SupplyPeriod(h, produced[(m, h)], exported[(m, h)])
            for (m, h) in sorted(set(exported) | set(produced))
            if m == member
        ]
        for b in supply_balances(periods, limits.carry_over):
            closed = period_closed(Period.parse(b.period), limits.grace_days, plan.timeline.as_of)
            if closed and b.exceeded:
                keys.add(key_of("EXPORTS_EXCEED_SUPPLY", None, (member,), b.period))
    return keys


def mirror(plan: Plan, certs: Any, confs: Any, limits: Limits) -> set[tuple[str, str, str]]:
    sides: dict[tuple[str, str, str], list[list[Any]]] = defaultdict(lambda: [[], []])
    for f, c in certs.values():
        if f.destination in MEMBERS + PARTNERS and f.voided_on is None:
            q = quarter_of(date.fromisoformat(c["date_of_issue"]))
            sides[(f.exporter, f.destination, q)][0].append((f.total_carats, f.total_value_usd))
    for cid, cs in confs.items():
        for x in cs:
            exporter = (
                certs[cid][0].exporter
                if cid in certs
                else (cid[3:5] if cid.startswith("XS-") else x.issuing_participant)
            )
            key = (exporter, x.importing_participant, quarter_of(x.received_on))
            sides[key][1].append((x.carats, x.value_usd))
    keys = set()
    for (exporter, importer, q), (ex, im) in sides.items():
        if exporter == importer or not period_closed(Period.parse(q), 30, plan.timeline.as_of):
            continue
        flows = [
            Flow(sum((a for a, _ in s), Decimal(0)), sum((b for _, b in s), Decimal(0)), len(s))
            for s in (ex, im)
        ]
        if mirror_finding(exporter, importer, q, flows[0], flows[1], limits.mirror_pct):
            keys.add(key_of("MIRROR_MISMATCH", None, (exporter, importer), q))
    return keys


# ---------------------------------------------------------------- tests


def test_the_same_seed_gives_the_same_plan() -> None:
    assert [o.line() for o in plan_for(7).ops] == [o.line() for o in plan_for(7).ops]


def test_another_seed_gives_another_plan() -> None:
    assert [o.line() for o in plan_for(7).ops] != [o.line() for o in plan_for(8).ops]


def test_every_discrepancy_kind_is_seeded_exactly_once() -> None:
    every = {k.value for k in DiscrepancyKind if k is not DiscrepancyKind.UNKNOWN}
    kinds = [e.kind for e in plan_for().expected]
    assert sorted(kinds) == sorted(every) == sorted(KINDS)


@pytest.mark.parametrize(
    ("seed", "duration", "rate", "members", "today"),
    [
        (2026, 45, 20, None, TODAY),
        (2026, 10, 10, None, TODAY),
        (1, 10, 10, ["BW", "ZA"], date(2026, 1, 1)),
        (2, 20, 5, ["CD"], date(2027, 3, 31)),
        (3, 30, 15, None, date(2026, 7, 2)),
    ],
)
def test_the_reconciler_would_find_exactly_the_seeded_anomalies(
    seed: int, duration: float, rate: float, members: list[str] | None, today: date
) -> None:
    plan = plan_for(seed, duration=duration, rate=rate, members=members, today=today)
    assert findings(plan) == {e.key for e in plan.expected}


def test_every_operation_passes_the_node_rules() -> None:
    plan, book = plan_for(), REGION.book()
    for o in plan.ops:
        b = o.body
        member = o.node in MEMBERS
        if b["op"] == "issue":
            draft = CertificateDraft.from_json(
                b["certificate"],
                issuing_participant="XS" if member else o.node,
                issuing_member=o.node if member else None,
                issuing_authority="authority",
                members=MEMBERS,
            )
            assert (
                rules.check_certificate(
                    draft, o.node, book, REGION.policy, region_code="XS", members=MEMBERS
                )
                is None
            ), b
        elif b["op"] == "confirm_import":
            c = ImportConfirmation.from_json(b, importing_participant=o.node)
            assert rules.check_import(c, o.node, book, region_code="XS") is None, b
        elif b["op"] == "declare_production":
            d = ProductionDeclaration.from_json(b, participant=o.node)
            assert rules.check_production(d, o.node, members=MEMBERS) is None, b


def test_totals_are_consistent() -> None:
    plan = plan_for()
    assert (
        plan.count("issue")
        == len(plan.shipments)
        == len({s.certificate_id for s in plan.shipments})
    )
    assert plan.count("issue", "clean") >= 45 * 20
    assert [o.at for o in plan.ops] == sorted(o.at for o in plan.ops)
    assert all(0 <= o.at <= 45 for o in plan.ops)
    assert sum(1 for o in plan.ops if o.skip_sequence) == 1


def test_clean_prices_follow_the_statistics() -> None:
    plan = plan_for()
    cheap = [s for s in plan.shipments if s.issuer == "CD"]
    dear = [s for s in plan.shipments if s.issuer == "NA"]
    per_ct = [sum(s.value_usd for s in g) / sum(s.carats for s in g) for g in (cheap, dear)]
    assert per_ct[0] < 20 < 300 < per_ct[1]


@pytest.mark.parametrize("offset", range(0, 366, 7))
def test_the_timeline_closes_the_clean_half_and_leaves_the_open_quarter_open(offset: int) -> None:
    today = date(2026, 1, 1) + timedelta(days=offset)
    tl = Timeline.starting(today, 30)
    assert tl.as_of >= today + timedelta(days=2)
    assert period_closed(tl.clean, 30, tl.as_of)
    assert not period_closed(tl.open_quarter, 30, tl.as_of)
    assert not period_closed(Period.parse(half_year_of(tl.open_quarter.first)), 30, tl.as_of)
    assert tl.open_quarter.first + timedelta(days=10) <= tl.open_last
    assert past_deadline(tl.open_last, 30, tl.as_of)


def test_the_score_lists_false_positives_and_misses() -> None:
    expected = plan_for().expected
    found = [
        {
            "kind": e.kind,
            "certificate_id": e.certificate_id,
            "participants": list(e.participants),
            "period": e.period,
        }
        for e in expected[1:]
    ]
    found.append(
        {
            "kind": "SEAL_BROKEN",
            "certificate_id": "XS-BW-2026-0000001-00",
            "participants": [],
            "period": None,
            "detail": "?",
        }
    )
    result = score(expected, found, KINDS)
    assert result.missed == (expected[0],)
    assert [f["certificate_id"] for f in result.false_positives] == ["XS-BW-2026-0000001-00"]
    n = len(expected)  # one seed per kind
    assert result.recall == (n - 1) / n and result.precision == (n - 1) / n


def test_the_demo_region_is_private_and_keeps_only_the_chosen_members() -> None:
    text = setup.toml_text(setup.demo_region(setup.example_region(), ["BW", "CD"]))
    from exchange.domain.region import parse_region

    region = parse_region(tomllib.loads(text))
    assert region.vhost == "kpx_demo"
    assert [m.code for m in region.members] == ["BW", "CD"]
    assert region.registry_database == "kpx_demo_registry"
    assert {n.database for n in (*region.members, *region.partners)} == {
        f"kpx_demo_node_{c.lower()}" for c in ("BW", "CD", "EU", "AE", "IN")
    }
    assert region.policy == REGION.policy
