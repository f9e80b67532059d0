"""Rotation under load (DESIGN §15, issue 11 item 1): nothing accepted is lost by a new key.

A provisioned copy of the example region on the shared services (its own vhost and
databases) runs the registry, the reconciler and the nodes BW, ZA and AE as real ``kpx … run``
processes while ``support.pipeline.Load`` keeps BW issuing for AE and ZA for BW, and AE and BW
confirming. Mid-load BW rotates its key with ``kpx node keys rotate``; once the registry has
accepted the announcement, BW's load signs with the new key. Afterwards the checker of the
fault suite (``support.pipeline.check``) must find nothing lost, nothing twice, every queue
empty, no dead letter, and the reconciler's figures equal to the registry's.

Before this change (issue 11): the reconciler dead-lettered the new key's events as
UnknownKey and 3 of 6 new certificates were missing from the statistics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from support.broker import free_port
from support.pipeline import (
    NODES,
    QUIET_FOR,
    Load,
    Quiet,
    Service,
    check,
    node_counts,
    query,
    unsent,
)
from support.region import provisioned_region
from support.services import management_url_from_env, unique_name

from exchange.app.runtime import Runtime
from exchange.messaging.outbox import OutboxWriter
from nodes.keys import current_signer
from nodes.operations import Node

KPX = Path(sys.executable).with_name("kpx")
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def rt(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("rotation")
    with provisioned_region(tmp, unique_name(), amqp_admin_url, database_server_url) as r:
        yield r


def env_of(rt: Runtime) -> dict[str, str]:
    return rt.settings.child_env({"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


@pytest.fixture(scope="module")
def running(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    logs = tmp_path_factory.mktemp("logs")
    commands = [("registry", ["registry", "run"]), ("reconciler", ["reconciler", "run"])]
    commands += [(f"node-{c}", ["node", "run", "--member", c]) for c in NODES]
    services = [
        Service(name, [str(KPX), *args, "--metrics-port", str(free_port())], env_of(rt),
                logs / f"{name}.log")
        for name, args in commands
    ]  # fmt: skip
    for service in services:
        service.start()
    try:
        yield services
    finally:
        for service in services:
            service.stop()


def wait_for(condition: Callable[[], bool], what: str, services: list[Service]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        dead = [s.name for s in services if not s.alive]
        assert not dead, f"exited: {dead}\n" + "\n".join(s.tail() for s in services)
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {TIMEOUT:.0f} s\n" + "\n".join(s.tail() for s in services))


def healthy(service: Service) -> bool:
    port = service.argv[service.argv.index("--metrics-port") + 1]
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def queues(rt: Runtime) -> list[dict[str, Any]]:
    url = management_url_from_env(rt.settings.amqp_url)
    vhost = quote(rt.region.vhost, safe="")
    response = httpx.get(f"{url}/api/queues/{vhost}", auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def drained(rt: Runtime) -> bool:
    behind = query(
        rt.registry_dsn,
        "SELECT (SELECT count(*) FROM event_log WHERE decision = 'ACCEPTED') - "
        "(SELECT count(*) FROM recon.processed) AS n",
    )[0]["n"]
    return node_counts(rt)["undecided"] == 0 and unsent(rt) == 0 and behind <= 0


def settled(rt: Runtime, services: list[Service]) -> None:
    """Wait until the pipeline stays drained for QUIET_FOR seconds.

    One quiet instant is not enough: up to ~1.25 s after the last batch the registry's
    announcer sends the newest checkpoint, and every node answers with a LogCosigned event —
    a node event, pending again until the registry decides it (CI once checked in between).
    """
    quiet = Quiet()
    wait_for(
        lambda: (
            quiet.held(drained(rt) and all(q.get("messages", 1) == 0 for q in queues(rt)))
            is not None
        ),
        f"pipeline drained and quiet for {QUIET_FOR} s",
        services,
    )


def rotation_state(rt: Runtime, key_id: str) -> str | None:
    rows = query(
        rt.node_dsn("BW"),
        "SELECT registry_state FROM node_events WHERE event_type = 'KeyRotated' AND subject = %s",
        (key_id,),
    )
    return str(rows[0]["registry_state"]) if rows else None


def key_ids_of(rt: Runtime, producer: str) -> dict[str, int]:
    """How many accepted events of ``producer`` each key signed (from the stored envelopes)."""
    counts: dict[str, int] = {}
    for row in query(
        rt.registry_dsn,
        "SELECT body FROM event_log WHERE producer = %s AND decision = 'ACCEPTED'",
        (producer,),
    ):
        _, envelope = rt.store.decode(bytes(row["body"]), expected="Envelope")
        counts[envelope["key_id"]] = counts.get(envelope["key_id"], 0) + 1
    return counts


def test_a_key_rotated_under_load_loses_nothing_and_the_figures_agree(
    rt: Runtime, running: list[Service], capsys: pytest.CaptureFixture[str]
) -> None:
    wait_for(lambda: all(map(healthy, running)), "every service healthy", running)
    old = current_signer(rt, "BW")
    load = Load(rt)
    load.start()
    try:
        time.sleep(2.0)  # load before the rotation
        done = subprocess.run(
            [str(KPX), "node", "keys", "rotate", "--member", "BW"],
            env=env_of(rt), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        new_id = done.stdout.strip().splitlines()[-1].split()[0]
        wait_for(lambda: rotation_state(rt, new_id) == "accepted", "rotation accepted", running)
        signer = current_signer(rt, "BW")
        assert signer.key_id == new_id != old.key_id
        load.nodes["BW"] = Node("BW", rt.region, OutboxWriter(rt.store, signer))
        time.sleep(3.0)  # load after it, under the new key
    finally:
        load.stop()
    settled(rt, running)
    verdict = check(rt, queues(rt))
    signed = key_ids_of(rt, "BW")
    registry = query(rt.registry_dsn, "SELECT count(*) AS n, sum(total_carats) AS ct FROM "
                     "certificates WHERE producer = ANY(%s)", (list(NODES),))[0]  # fmt: skip
    recon = query(rt.registry_dsn, "SELECT count(*) AS n, sum(total_carats) AS ct FROM "
                  "recon.certificates")[0]  # fmt: skip
    with capsys.disabled():
        print(f"\n[rotation] events={verdict.events} lost={verdict.lost} "
              f"duplicates={verdict.duplicates} signed_by={signed} registry={registry} "
              f"reconciler={recon}")  # fmt: skip
    assert not load.refused, load.refused[:3]
    assert verdict.lost == 0 and verdict.duplicates == 0 and not verdict.problems, verdict.problems
    assert signed.get(old.key_id, 0) > 0 and signed.get(new_id, 0) > 0, signed
    assert (recon["n"], recon["ct"]) == (registry["n"], registry["ct"])


def test_a_revocation_reaches_the_running_node_as_a_notice(
    rt: Runtime, running: list[Service]
) -> None:
    old = sorted(key_ids_of(rt, "BW"))[0]  # either of BW's keys: revoked from tomorrow only
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    done = subprocess.run(
        [str(KPX), "registry", "keys", "revoke", "--member", "BW", "--key-id", old,
         "--from", tomorrow, "--reason", "drill"],
        env=env_of(rt), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"revoked {old} from {tomorrow}" in done.stdout
    wait_for(
        lambda: bool(
            query(rt.node_dsn("BW"), "SELECT 1 FROM key_revocations WHERE key_id = %s", (old,))
        ),
        "the KeyRevoked notice recorded at BW",
        running,
    )
    shown = subprocess.run(
        [str(KPX), "node", "keys", "show", "--member", "BW"],
        env=env_of(rt), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"revoked {old} from {tomorrow}: drill" in shown.stdout
