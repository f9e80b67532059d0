"""Shared by the node web tests: a live region (registry and two nodes running), both node
web apps served on loopback, users and tokens. No tests here.

``live_region`` (module scope in each test module) provisions a private region, starts
``kpx registry run`` and ``kpx node run`` for BW and NA as child processes, and serves the
web apps of BW (exporter) and NA (importer) in threads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from support.region import provisioned_region
from support.services import unique_name

from exchange.adapters import postgres
from exchange.app.runtime import Runtime
from nodes.web import access
from nodes.web.app import create_app
from nodes.web.commands import node_web
from nodes.web.context import NodeWeb

KPX = Path(sys.executable).with_name("kpx")
PASSWORD = "correct horse battery"
USERS = {  # node -> (username, role, full name)
    "BW": [
        ("clara", "clerk", "Clara Clerk"),
        ("oscar", "officer", "Oscar Mosweu"),
        ("olga", "officer", "Olga Officer"),
        ("audrey", "auditor", "Audrey Auditor"),
    ],
    "NA": [("nuno", "officer", "Nuno Shikongo")],
}


@dataclass
class LiveRegion:
    rt: Runtime
    urls: dict[str, str]
    webs: dict[str, NodeWeb]
    tokens: dict[str, str]  # "officer" / "auditor" of BW
    tmp: Path

    def query(self, code: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = postgres.connect(self.rt.node_dsn(code))
        try:
            with postgres.transaction(conn) as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def child(rt: Runtime, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(KPX), *args],
            env=rt.settings.child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def add_people(nw: NodeWeb, code: str) -> None:
    def work(cur: Any) -> None:
        for username, role, full_name in USERS.get(code, []):
            access.add_user(cur, username, role, PASSWORD, full_name)

    nw.pool.run(work)


@contextmanager
def live_region(
    tmp: Path, amqp_url: str, database_url: str, serve: Callable[..., Any]
) -> Iterator[LiveRegion]:
    with ExitStack() as stack:
        rt = stack.enter_context(provisioned_region(tmp, unique_name(), amqp_url, database_url))
        stack.enter_context(
            child(rt, ["registry", "run", "--metrics-port", str(free_port())], tmp / "registry.log")
        )
        webs, urls = {}, {}
        for code in ("BW", "NA"):
            stack.enter_context(
                child(
                    rt,
                    ["node", "run", "--member", code, "--metrics-port", str(free_port())],
                    tmp / f"node-{code}.log",
                )
            )
            webs[code] = node_web(rt, code)
            stack.callback(webs[code].pool.close)
            add_people(webs[code], code)
            urls[code] = stack.enter_context(serve(create_app(webs[code])))
        tokens = {
            role: webs["BW"].pool.run(lambda cur, r=role: access.create_token(cur, "erp", r))
            for role in ("officer", "auditor")
        }
        yield LiveRegion(rt, urls, webs, tokens, tmp)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def certificate(destination: str = "NA", parcels: int = 2, **changes: Any) -> dict[str, Any]:
    """A valid certificate from BW (no number: the node allocates it)."""
    cert: dict[str, Any] = {
        "destination": destination,
        "origin": {"type": "UNMIXED", "countries": ["BW"]},
        "exporter": {
            "name": "Okavango Diamond Company",
            "address": "Gaborone",
            "country": "BW",
            "licence_no": "BW-EX-1",
        },
        "importer": {
            "name": "Namdia Trading",
            "address": "Windhoek",
            "country": destination,
            "licence_no": "IM-9",
        },
        "date_of_issue": date.today().isoformat(),
        "date_of_expiry": (date.today() + timedelta(days=30)).isoformat(),
        "parcels": [
            {
                "parcel_no": i + 1,
                "hs_code": "7102.31",
                "carats": "100.50",
                "value_usd": "19200.00",
                "origin_country": "BW",
            }
            for i in range(parcels)
        ],
        "container": {"container_id": "C-1", "seal_numbers": ["S1"]},
    }
    cert.update(changes)
    return cert
