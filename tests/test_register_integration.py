"""Registers and external trade data (DESIGN §14) through the real broker and PostgreSQL.

Two registries run for the module: one whose region enforces its registers (events are sent
as the nodes' broker users and the RegistryDecision read back), one that only records them
(the same facts are accepted and ``deadline_checks.reconcile`` raises them as discrepancies).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support.registry import Env, certificate, make_env

from exchange.adapters.postgres import connect, transaction
from exchange.domain.certificate import HsCode, Parcel
from exchange.domain.events import Issuance, Outcome, ProductionDeclaration
from exchange.domain.kpstats import Period
from exchange.domain.register import EntryKind, RegisterEntry, Revocation
from exchange.errors import MalformedTradeFile
from exchange.reconciler import aggregation, deadline_checks
from exchange.reconciler import service as reconciler_service
from exchange.registry import register, store, trade
from exchange.registry.commands import (
    import_trade_command,
    register_command,
    trade_imports_command,
)
from exchange.wire.codec import default_store
from exchange.wire.signing import generate_key

REVOKED = date(2026, 3, 10)
AS_OF = date(2026, 8, 15)
_serial = iter(range(1, 1_000_000))


def running(make_vhost: Any, make_database: Any, mode: str) -> Iterator[Env]:
    vhost, database = make_vhost(), make_database()
    env = make_env(vhost.name, vhost.amqp_url, database.url)
    env.region = dataclasses.replace(
        env.region, policy=dataclasses.replace(env.region.policy, registers=mode)
    )
    reconciler_service.prepare(database.url)
    registry = env.run_registry()
    try:
        yield env
    finally:
        registry.stop()
        env.publisher.close()


@pytest.fixture(scope="module")
def enforce(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running(make_session_vhost, make_session_database, "enforce")


@pytest.fixture(scope="module")
def record(make_session_vhost: Any, make_session_database: Any) -> Iterator[Env]:
    yield from running(make_session_vhost, make_session_database, "record")


def send(env: Env, producer: str, payload: Any) -> tuple[Outcome, str | None]:
    sealed = env.producers.seal(producer, payload)
    env.publisher.send(sealed)
    decision = env.decision_for(producer, sealed.event_id)
    return decision.decision, decision.reason


def entry(entry_id: str, kind: EntryKind, licence: str, member: str = "BW") -> RegisterEntry:
    return RegisterEntry(member, kind, entry_id, f"{entry_id} Ltd", licence, date(2025, 1, 1))


def cert(member: str = "BW", licence: str = "EX-1", **changes: Any) -> Any:
    c = certificate(member, next(_serial), **changes)
    return dataclasses.replace(c, exporter=dataclasses.replace(c.exporter, licence_no=licence))


def from_producer(producer: str, carats: str, member: str = "BW", **changes: Any) -> Any:
    parcel = Parcel(1, HsCode.HS_7102_31, Decimal(carats), Decimal("1000.00"), member, producer)
    return cert(
        member, parcels=(parcel,), number_of_parcels=1, total_carats=parcel.carats,
        total_value_usd=parcel.value_usd, **changes,
    )  # fmt: skip


ACCEPTED, REJECTED = Outcome.ACCEPTED, Outcome.REJECTED


# ---------------------------------------------------------------- enforce


def test_enforce_accepts_an_exporter_the_day_before_revocation_and_refuses_it_on_its_date(
    enforce: Env,
) -> None:
    assert send(enforce, "BW", entry("BW-EXP-1", EntryKind.EXPORTER, "EX-1")) == (ACCEPTED, None)
    revocation = Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn")
    assert send(enforce, "BW", revocation) == (ACCEPTED, None)
    day_before = cert(date_of_issue=REVOKED - timedelta(days=1))
    assert send(enforce, "BW", Issuance(day_before)) == (ACCEPTED, None)
    on_the_day = cert(date_of_issue=REVOKED)
    assert send(enforce, "BW", Issuance(on_the_day)) == (REJECTED, "UNLICENSED_EXPORTER")
    after = cert(date_of_issue=REVOKED + timedelta(days=1))
    assert send(enforce, "BW", Issuance(after)) == (REJECTED, "UNLICENSED_EXPORTER")


def test_enforce_refuses_a_parcel_naming_no_registered_producer(enforce: Env) -> None:
    assert send(enforce, "ZA", entry("ZA-EXP-1", EntryKind.EXPORTER, "EX-1", "ZA"))[0] is ACCEPTED
    assert send(enforce, "ZA", entry("ZA-MINE-1", EntryKind.MINE, "ML-1", "ZA"))[0] is ACCEPTED
    kw: dict[str, Any] = {"member": "ZA", "destination": "BW"}
    assert send(enforce, "ZA", Issuance(from_producer("ZA-MINE-1", "10.00", **kw)))[0] is ACCEPTED
    unknown = Issuance(from_producer("ZA-MINE-404", "10.00", **kw))
    assert send(enforce, "ZA", unknown) == (REJECTED, "UNREGISTERED_PRODUCER")


def test_enforce_refuses_a_declaration_of_an_unregistered_producer(enforce: Env) -> None:
    declared = ProductionDeclaration("NA", "2026-H1", "NA-COOP-9", Decimal("5.00"), Decimal("9"))
    assert send(enforce, "NA", declared) == (REJECTED, "UNREGISTERED_PRODUCER")
    coop = dataclasses.replace(
        entry("NA-COOP-9", EntryKind.ARTISANAL_COOPERATIVE, "AC-9", "NA"), members=40
    )
    assert send(enforce, "NA", coop)[0] is ACCEPTED
    assert send(enforce, "NA", declared) == (ACCEPTED, None)


def test_a_revocation_of_an_unknown_id_or_an_id_of_another_member_is_refused(enforce: Env) -> None:
    unknown = Revocation("NA", "NA-NONE-1", REVOKED, "x")
    assert send(enforce, "NA", unknown) == (REJECTED, "NOT_ALLOWED")
    foreign = entry("BW-MINE-7", EntryKind.MINE, "ML-7", member="NA")
    assert send(enforce, "NA", foreign) == (REJECTED, "SCHEMA_INVALID")
    assert send(enforce, "EU", dataclasses.replace(foreign, member="EU"))[1] == "NOT_ALLOWED"


def test_a_partners_certificate_is_not_checked_against_the_register(enforce: Env) -> None:
    partner = dataclasses.replace(
        cert("BW", licence="NO-SUCH"), certificate_id="AE-2026-77", issuing_participant="AE",
        issuing_member=None, destination="BW", scope=certificate("BW", destination="AE").scope,
    )  # fmt: skip
    assert send(enforce, "AE", Issuance(partner)) == (ACCEPTED, None)


def test_the_register_lists_each_entry_with_its_history(enforce: Env) -> None:
    send(enforce, "BW", entry("BW-EXP-2", EntryKind.EXPORTER, "EX-2"))
    send(enforce, "BW", Revocation("BW", "BW-EXP-2", REVOKED, "expired"))
    send(enforce, "BW", dataclasses.replace(entry("BW-EXP-2", EntryKind.EXPORTER, "EX-3")))
    send(enforce, "BW", entry("BW-EXP-3", EntryKind.EXPORTER, "EX-9"))
    send(enforce, "BW", Revocation("BW", "BW-EXP-3", REVOKED, "expired"))
    conn = connect(enforce.dsn)
    try:
        with transaction(conn) as cur:
            listed = {e["id"]: e for e in register.listing(cur, "BW", "EXPORTER")}
    finally:
        conn.close()
    assert listed["BW-EXP-3"]["revoked_from"] == REVOKED.isoformat()
    again = listed["BW-EXP-2"]
    assert again["licence_no"] == "EX-3" and again["revoked_from"] is None
    history = [(h["event"], h.get("licence_no"), h.get("reason")) for h in again["history"]]
    assert history == [("registered", "EX-2", None), ("revoked", None, "expired"),
                       ("registered", "EX-3", None)]  # fmt: skip


# ---------------------------------------------------------------- record, then reconcile


def reconcile(env: Env) -> dict[str, list[dict[str, Any]]]:
    ctx = reconciler_service.context(env.region, default_store(), generate_key("XS-RECONCILER"))
    conn = connect(env.dsn)
    try:
        deadline_checks.reconcile(conn, ctx, AS_OF)
    finally:
        conn.close()
    found: dict[str, list[dict[str, Any]]] = {}
    for row in env.query("SELECT kind, certificate_id, participants, period, detail"
                         " FROM recon.discrepancies ORDER BY id"):  # fmt: skip
        found.setdefault(row["kind"], []).append(row)
    return found


def test_record_accepts_the_same_facts_and_reconcile_raises_them(record: Env) -> None:
    assert send(record, "BW", entry("BW-EXP-1", EntryKind.EXPORTER, "EX-1"))[0] is ACCEPTED
    send(record, "BW", Revocation("BW", "BW-EXP-1", REVOKED, "licence withdrawn"))
    fine = cert(date_of_issue=REVOKED - timedelta(days=1))
    unlicensed = cert(date_of_issue=REVOKED)
    unregistered = from_producer("BW-MINE-404", "10.00", date_of_issue=REVOKED - timedelta(days=2))
    for c in (fine, unlicensed, unregistered):
        assert send(record, "BW", Issuance(c)) == (ACCEPTED, None)
    send(record, "NA", entry("NA-MINE-1", EntryKind.MINE, "ML-1", "NA"))  # NA keeps a register
    declared = ProductionDeclaration("NA", "2026-H1", "NA-COOP-1", Decimal("5.00"), Decimal("9"))
    assert send(record, "NA", declared) == (ACCEPTED, None)
    # BW registered no mine or cooperative yet (onboarding): its declarations are not raised.
    not_yet = ProductionDeclaration("BW", "2026-H1", "BW-ANY", Decimal("5.00"), Decimal("9"))
    assert send(record, "BW", not_yet) == (ACCEPTED, None)

    found = reconcile(record)
    assert {r["certificate_id"] for r in found["UNLICENSED_EXPORTER"]} == {
        unlicensed.certificate_id
    }
    producers = found["UNREGISTERED_PRODUCER"]
    assert {r["certificate_id"] for r in producers} == {unregistered.certificate_id, None}
    assert any("NA-COOP-1" in r["detail"] and r["period"] == "2026-H1" for r in producers)


def test_producer_exports_beyond_production_are_raised_just_outside_the_tolerance(
    record: Env,
) -> None:
    for mine in ("ZA-MINE-1", "ZA-MINE-2"):
        send(record, "ZA", entry(mine, EntryKind.MINE, f"ML-{mine}", "ZA"))
        declared = ProductionDeclaration("ZA", "2026-H1", mine, Decimal("1000.00"), Decimal("1"))
        assert send(record, "ZA", declared)[0] is ACCEPTED
    send(record, "ZA", entry("ZA-EXP-1", EntryKind.EXPORTER, "EX-1", "ZA"))
    kw: dict[str, Any] = {"member": "ZA", "destination": "BW"}
    inside = from_producer("ZA-MINE-1", "1005.00", **kw)  # 0.5 % of 1000 ct: passes
    outside = from_producer("ZA-MINE-2", "1005.01", **kw)  # one cent more: raised
    for c in (inside, outside):
        assert send(record, "ZA", Issuance(c))[0] is ACCEPTED

    found = reconcile(record)["PRODUCER_EXPORTS_EXCEED_PRODUCTION"]
    raised = [r for r in found if r["participants"] == ["ZA"]]  # BW's unregistered one: above
    assert len(raised) == 1
    detail = raised[0]["detail"]
    assert "ZA-MINE-2" in detail and "1005.01 ct" in detail and "1000.00 ct" in detail


TRADE = """period,reporter,partner,flow,hs_code,carats,value_usd
2026-Q1,NAM,SOM,X,7102.31,500.00,100000.00
2026-Q1,NA,CF,X,7102,10,1000
2026-02,NA,RU,M,7102.21,7,700
2026-Q1,NA,ZA,X,7102,120.50,24000.25
2026-Q1,ZAF,NAM,M,7102,200,24000.25
2026-Q1,GB,SOM,X,7102,1,1
2026-Q1,NA,ZA,X,8471,1,1
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_imported_trade_raises_non_participant_trade_and_external_mirror_mismatches(
    record: Env, tmp_path: Path
) -> None:
    # NA -> ZA, 120.50 ct, 24000.25 USD
    c = cert("NA", date_of_issue=date(2026, 2, 1), date_of_expiry=date(2026, 3, 1))
    send(record, "NA", entry("NA-EXP-1", EntryKind.EXPORTER, "EX-1", "NA"))
    assert send(record, "NA", Issuance(c)) == (ACCEPTED, None)
    conn = connect(record.dsn)
    try:
        with transaction(conn) as cur:  # RU suspended part-way through February
            store.set_status(cur, "RU", "SUSPENDED", date(2026, 2, 20), "test", None)
        done = trade.import_trade(conn, write(tmp_path, "t.csv", TRADE), "test")
    finally:
        conn.close()
    assert (done.rows, done.skipped, done.file_format) == (6, 1, "plain")

    found = reconcile(record)
    non = {tuple(r["participants"]): r["detail"] for r in found["NON_PARTICIPANT_TRADE"]}
    assert set(non) == {("NA", "SO"), ("NA", "CF"), ("NA", "RU")}
    assert "SO is no KP participant" in non[("NA", "SO")]
    assert "RU was a suspended KP participant from 2026-02-20" in non[("NA", "RU")]
    mirror = found["EXTERNAL_MIRROR_MISMATCH"]
    assert [tuple(r["participants"]) for r in mirror] == [("ZA", "NA")]
    assert "200.00 ct" in mirror[0]["detail"] and "120.50 ct" in mirror[0]["detail"]


def test_a_malformed_row_is_refused_with_line_and_column_and_nothing_is_kept(
    record: Env, tmp_path: Path
) -> None:
    before = record.query("SELECT count(*) AS n FROM trade_rows")[0]["n"]
    bad = TRADE.replace("2026-Q1,NA,ZA,X,7102,120.50", "2026-Q1,NA,ZA,X,7102,12O.50")
    conn = connect(record.dsn)
    try:
        with pytest.raises(MalformedTradeFile, match="line 5, column carats"):
            trade.import_trade(conn, write(tmp_path, "bad.csv", bad), "bad")
    finally:
        conn.close()
    assert record.query("SELECT count(*) AS n FROM trade_rows")[0]["n"] == before
    assert record.query("SELECT count(*) AS n FROM trade_imports WHERE source = 'bad'")[0]["n"] == 0


COMTRADE = """typeCode,freqCode,refPeriodId,reporterISO,partnerISO,flowCode,cmdCode,qty,primaryValue
C,A,20250101,BWA,ARE,X,7102,1000.4,5000000
C,A,20250101,BWA,W00,X,7102,1000.4,5000000
C,A,20250101,BWA,ARE,RX,7102,1,1
C,M,20250301,BWA,IND,M,710231,3.005,12
C,A,20250101,BWA,ARE,X,2710,9,9
"""


def test_a_comtrade_file_is_read_and_each_import_is_a_new_version(
    record: Env, tmp_path: Path
) -> None:
    path = write(tmp_path, "comtrade.csv", COMTRADE)
    conn = connect(record.dsn)
    try:
        first = trade.import_trade(conn, path, "comtrade")
        second = trade.import_trade(conn, path, "comtrade")
        with transaction(conn) as cur:
            listed = [i.to_json() for i in trade.imports(cur) if i.source == "comtrade"]
    finally:
        conn.close()
    assert (first.version, second.version) == (1, 2)
    assert (first.rows, first.skipped, first.file_format) == (2, 3, "comtrade")
    assert [i["version"] for i in listed] == [2, 1]
    rows = record.query(
        "SELECT period, reporter, partner, flow, hs_code, carats FROM trade_rows"
        " WHERE import_id = %s ORDER BY line",
        (second.import_id,),
    )
    assert [tuple(r.values()) for r in rows] == [
        ("2025", "BW", "AE", "X", "7102", Decimal("1000.40")),
        ("2025-03", "BW", "IN", "M", "710231", Decimal("3.01")),
    ]


def test_statistics_give_production_per_producer_kind_and_the_registers_counts(
    record: Env,
) -> None:
    coop = dataclasses.replace(
        entry("ZA-COOP-1", EntryKind.ARTISANAL_COOPERATIVE, "AC-1", "ZA"), members=300
    )
    others = [entry(f"ZA-MINE-{n}", EntryKind.MINE, f"ML-{n}", "ZA") for n in (1, 2)]
    for e in [coop, *others, entry("ZA-EXP-1", EntryKind.EXPORTER, "EX-1", "ZA")]:
        assert send(record, "ZA", e)[0] is ACCEPTED  # again when earlier tests ran: a renewal
    conn = connect(record.dsn)
    try:
        with transaction(conn) as cur:
            # The reconciler's projection of two declarations (its consumer is not running here).
            cur.executemany(
                "INSERT INTO recon.production VALUES (%s, 'ZA', '2026-H1', %s, %s, 1)",
                [(str(uuid.uuid4()), "ZA-MINE-1", 800), (str(uuid.uuid4()), "ZA-COOP-1", 40)],
            )
            rows = aggregation.compute(cur, Period.parse("2026-H1"), "XS", ["ZA"])
    finally:
        conn.close()
    kinds = {r["key"]: r["carats"] for r in rows if r["by"] == "producer_kind"}
    assert kinds == {"industrial": Decimal("800.00"), "artisanal": Decimal("40.00")}
    counts = {r["by"]: r["certificates"] for r in rows if r["section"] == "register"
              and r["participant"] == "ZA"}  # fmt: skip
    assert counts["licensed_cooperatives"] == 1 and counts["registered_miners"] == 300
    assert counts["licensed_mines"] == 2 and counts["licensed_exporters"] == 1


@dataclasses.dataclass
class _Obj:
    registry_dsn: str


def test_the_commands_list_the_register_import_trade_and_list_the_imports(
    enforce: Env, tmp_path: Path
) -> None:
    dealer = dataclasses.replace(
        entry("ZA-DEAL-1", EntryKind.DEALER, "D-1", "ZA"), zone="Kimberley"
    )
    assert send(enforce, "ZA", dealer)[0] is ACCEPTED
    runner, obj = CliRunner(), _Obj(enforce.dsn)
    out = runner.invoke(register_command, ["--json", "--member", "ZA"], obj=obj)
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)
    assert {e["member"] for e in listed} == {"ZA"} and "ZA-DEAL-1" in {e["id"] for e in listed}
    out = runner.invoke(register_command, ["--json", "--kind", "DEALER"], obj=obj)
    assert [(e["id"], e["zone"]) for e in json.loads(out.output)] == [("ZA-DEAL-1", "Kimberley")]
    good = write(tmp_path, "good.csv", TRADE)
    out = runner.invoke(import_trade_command, [str(good), "--source", "cli"], obj=obj)
    assert (
        out.exit_code == 0 and "imported 6 rows (plain; 1 skipped) as cli version 1" in out.output
    )
    bad = write(tmp_path, "bad.csv", TRADE.replace("NAM,SOM,X", "NAM,SOMX,X"))
    out = runner.invoke(import_trade_command, [str(bad), "--source", "cli"], obj=obj)
    assert isinstance(out.exception, MalformedTradeFile)  # for the error boundary of `kpx`
    assert "line 2, column partner" in str(out.exception)
    out = runner.invoke(trade_imports_command, [], obj=obj)
    assert [(i["source"], i["version"]) for i in json.loads(out.output)] == [("cli", 1)]
