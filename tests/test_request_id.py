"""request_id (DESIGN §9): an operation already applied under its id is answered, not applied
again; and a second declare_production for a period and producer is a revision.

On the real PostgreSQL of a provisioned private region.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxWriter
from nodes.operations import Node, Result


def certificate(**changes: Any) -> dict[str, Any]:
    cert: dict[str, Any] = {
        "destination": "AE",
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {"name": "Okavango Diamond Company", "address": "Gaborone",
                     "country": "BW", "licence_no": "BW-EX-1"},
        "importer": {"name": "DMCC Trader", "address": "Dubai", "country": "AE",
                     "licence_no": "IM-9"},
        "date_of_issue": "2026-11-20",
        "date_of_expiry": "2026-12-20",
        "parcels": [{"parcel_no": 1, "hs_code": "7102.31", "carats": "100.00",
                     "value_usd": "19200.00", "origin_country": "BW"}],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }  # fmt: skip
    cert.update(changes)
    return cert


def issue(rid: str | None = None, **changes: Any) -> str:
    op: dict[str, Any] = {"op": "issue", "certificate": certificate(**changes)}
    if rid is not None:
        op["request_id"] = rid
    return json.dumps(op)


def submit(rt: Runtime, lines: list[str], code: str = "BW") -> list[Result]:
    conn = postgres.connect(rt.node_dsn(code))
    try:
        node = Node(code, rt.region, OutboxWriter(rt.store, rt.signer(code)))
        return list(node.submit(conn, lines))
    finally:
        conn.close()


def scalar(rt: Runtime, sql: str, *args: Any, code: str = "BW") -> Any:
    conn = postgres.connect(rt.node_dsn(code))
    try:
        with postgres.transaction(conn) as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
            return None if row is None else row[0]
    finally:
        conn.close()


def outbox_size(rt: Runtime) -> int:
    return int(scalar(rt, "SELECT count(*) FROM outbox"))


def test_an_issue_repeated_under_its_request_id_prints_the_original_result_and_adds_nothing(
    rt: Runtime,
) -> None:
    [first] = submit(rt, [issue("erp-0001")])
    assert first.ok
    before = outbox_size(rt), scalar(rt, "SELECT count(*) FROM certificates")
    [again] = submit(rt, [issue("erp-0001")])
    assert str(again) == f"1 ok {first.subject} (already applied)"
    assert (outbox_size(rt), scalar(rt, "SELECT count(*) FROM certificates")) == before


def test_a_request_id_repeated_within_one_submission_is_applied_once(rt: Runtime) -> None:
    before = outbox_size(rt)
    results = submit(rt, [issue("erp-0002"), issue("erp-0003"), issue("erp-0002")])
    assert [r.ok for r in results] == [True, True, True]
    assert str(results[2]) == f"3 ok {results[0].subject} (already applied)"
    assert outbox_size(rt) == before + 2


def test_a_refused_operation_is_not_remembered_so_a_corrected_retry_applies(
    rt: Runtime,
) -> None:
    [refused] = submit(rt, [issue("erp-0004", destination="SO")])
    assert not refused.ok
    [retry] = submit(rt, [issue("erp-0004")])
    assert retry.ok and not retry.already


def test_void_and_production_honour_request_ids_too(rt: Runtime) -> None:
    [cert] = submit(rt, [issue()])
    void = json.dumps({"op": "void", "certificate_id": cert.subject, "reason": "typo",
                       "request_id": "erp-void-1"})  # fmt: skip
    assert submit(rt, [void])[0].ok
    assert str(submit(rt, [void])[0]) == f"1 ok {cert.subject} (already applied)"


@pytest.mark.parametrize("rid", ["", "x" * 101, 42, ["a"]])
def test_a_request_id_that_is_not_a_string_of_1_to_100_characters_is_refused(
    rt: Runtime, rid: Any
) -> None:
    [result] = submit(rt, [json.dumps({"op": "issue", "certificate": certificate(),
                                       "request_id": rid})])  # fmt: skip
    assert not result.ok and result.code == "SCHEMA_INVALID"
    assert "request_id" in result.sentence


def test_a_request_id_of_100_characters_is_accepted(rt: Runtime) -> None:
    assert submit(rt, [issue("r" * 100)])[0].ok


def test_two_concurrent_submissions_with_the_same_request_id_apply_it_once(
    rt: Runtime,
) -> None:
    before = outbox_size(rt)
    results: list[Result] = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        results.extend(submit(rt, [issue("erp-race")]))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.already for r in results) == [False, True]
    assert results[0].subject == results[1].subject
    assert outbox_size(rt) == before + 1


def production(carats: str, **changes: Any) -> str:
    op = {"op": "declare_production", "period": "2026-H1", "producer": "Jwaneng",
          "carats": carats, "value_usd": "1000000.00"}  # fmt: skip
    op.update(changes)
    return json.dumps(op)


def test_a_second_declaration_for_a_period_and_producer_replaces_the_first(
    rt: Runtime,
) -> None:
    assert submit(rt, [production("5000.00")])[0].ok
    assert submit(rt, [production("5200.00")])[0].ok
    rows = scalar(
        rt,
        "SELECT json_agg(json_build_object('carats', carats, 'revision', revision)) "
        "FROM production WHERE period = '2026-H1' AND producer_id = 'Jwaneng'",
    )
    assert rows == [{"carats": 5200.00, "revision": 1}]
    # Each declaration is still an event: the region learns of the revision.
    assert scalar(rt, "SELECT count(*) FROM node_events WHERE subject = '2026-H1/Jwaneng'") == 2


def test_the_submit_command_prints_already_applied(rt: Runtime) -> None:
    import subprocess
    import sys
    from pathlib import Path

    kpx = Path(sys.executable).with_name("kpx")
    env = rt.settings.child_env()
    lines = issue("cli-1") + "\n" + issue("cli-1") + "\n"
    done = subprocess.run([str(kpx), "node", "submit", "--member", "BW", "-"], input=lines,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert second == first.replace("1 ok", "2 ok") + " (already applied)"
