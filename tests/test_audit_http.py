"""``kpx node audit`` over the registry's public log (its portal's ``/log`` tiles), never its
database, on the real RabbitMQ, PostgreSQL and an HTTP server.

A registry and node BW (with its witness) run until BW's issues and cosignatures are all
answered, then stop. Each test serves the portal's real app under uvicorn over its own copy
of the registry's database (``CREATE DATABASE … TEMPLATE``), audits its own copy of BW's, and
tampers with one of them or puts a lying server in between: the audit passes only on the
honest log, names the event or checkpoint otherwise, and exits 3 when the log is unreachable.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from support.broker import free_port
from support.browser import serve
from support.pipeline import query
from support.registry import Env, certificate, issuance, make_env, wait_until
from support.witnessing import (
    cloned,
    issue_at,
    serve_portal,
    start_node,
    start_registry,
    tamper,
)

from exchange.adapters.postgres import connect, transaction
from exchange.app import logaudit
from exchange.app.exits import ExitCode, exit_code
from exchange.app.logaudit import audit
from exchange.app.runtime import Runtime
from exchange.errors import LogUnavailable
from exchange.registry import log as registry_log
from exchange.tlog import checkpoint, tree
from nodes.service import migrate

KPX = Path(sys.executable).with_name("kpx")


@dataclass(frozen=True)
class Settled:
    env: Env
    keys: Path  # the log key (the node's trusted copy of its public half too)
    registry: str  # DSNs of the stopped region's databases: only ever cloned
    node: str


@pytest.fixture(scope="module")
def settled(
    make_session_vhost: Any, make_session_database: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settled]:
    vhost, registry_db, node_db = (
        make_session_vhost(),
        make_session_database(),
        make_session_database(),
    )
    env = make_env(vhost.name, vhost.amqp_url, registry_db.url)
    keys = tmp_path_factory.mktemp("keys")
    registry_log.ensure_key(keys, "XS")
    migrate(node_db.url)
    stop = threading.Event()
    threads = [start_registry(env, keys, stop), start_node(env, keys, "BW", node_db.url, stop)]
    try:
        for serial in range(1, 4):
            for member, dest in (("ZA", "NA"), ("NA", "ZA")):
                cert = certificate(member, serial, destination=dest)
                env.publisher.send(env.producers.seal(member, issuance(cert)))
        wait_until(lambda: _announced(env) >= 1, timeout=30, what="a first checkpoint")
        issue_at(env, "BW", node_db.url, count=3)
        wait_until(lambda: _answered(node_db.url), timeout=60, what="BW's events answered")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        env.publisher.close()
    yield Settled(env, keys, registry_db.url, node_db.url)


def _announced(env: Env) -> int:
    rows = env.query("SELECT count(*) AS n FROM log_checkpoints WHERE announced")
    return int(rows[0]["n"])


def _answered(dsn: str) -> bool:
    """BW's three issues and at least one cosignature accepted, nothing pending."""
    rows = query(dsn, "SELECT event_type, registry_state FROM node_events")
    issued = [r for r in rows if r["event_type"] == "CertificateIssued"]
    cosigned = [r for r in rows if r["event_type"] == "LogCosigned"]
    return (
        len(issued) == 3
        and len(cosigned) >= 1
        and all(r["registry_state"] == "accepted" for r in rows)
    )


@dataclass(frozen=True)
class Copy:
    """One test's region: copies of both databases, the portal serving the registry's."""

    env: Env
    keys: Path
    registry: str
    node: str
    url: str

    def audit(self, *args: str, public_url: str | None = None) -> Result:
        """``kpx node audit --member BW ARGS`` with the region's public URL ``public_url``."""
        obj = SimpleNamespace(
            node_dsn=lambda code: {"BW": self.node}[code],
            trusted_dir=lambda code: self.keys,
            region=SimpleNamespace(code="XS", public_url=public_url or self.url),
        )
        return CliRunner().invoke(audit, ["--member", "BW", *args], obj=obj)

    def issued(self) -> list[dict[str, Any]]:
        """BW's accepted issues: event id and leaf index, in leaf order."""
        return query(
            self.node,
            "SELECT event_id::text, leaf_index FROM node_events "
            "WHERE event_type = 'CertificateIssued' ORDER BY leaf_index",
        )


@pytest.fixture
def region(settled: Settled) -> Iterator[Copy]:
    with ExitStack() as stack:
        registry = stack.enter_context(cloned(settled.registry))
        node = stack.enter_context(cloned(settled.node))
        url = stack.enter_context(serve_portal(settled.env, registry))
        yield Copy(settled.env, settled.keys, registry, node, url)


def test_the_audit_over_the_public_log_passes_and_reads_only_tiles(region: Copy) -> None:
    result = region.audit()
    assert result.exit_code == 0, result.output
    assert f"read {region.url}/log: " in result.output
    assert "audit of BW passed: " in result.output
    assert "had no stored leaf index" not in result.output  # every index came with its decision


def test_events_accepted_without_a_leaf_index_are_found_in_the_entries_and_stored(
    region: Copy,
) -> None:
    before = {r["event_id"]: r["leaf_index"] for r in region.issued()}
    tamper(region.node, "UPDATE node_events SET leaf_index = NULL")
    result = region.audit()
    assert result.exit_code == 0, result.output
    assert "had no stored leaf index: looked for among the log's entries" in result.output
    assert {r["event_id"]: r["leaf_index"] for r in region.issued()} == before
    registry = connect(region.registry)
    try:
        for event_id, index in before.items():
            assert registry_log.leaf_of_event(registry, event_id)[0] == index
    finally:
        registry.close()


def test_a_changed_event_body_in_the_registrys_database_fails_naming_the_event(
    region: Copy,
) -> None:
    event = region.issued()[1]["event_id"]
    tamper(
        region.registry,
        f"UPDATE event_log SET body = body || '\\x00'::bytea WHERE event_id = '{event}'",
    )
    result = region.audit()
    assert result.exit_code == 1, result.output
    assert f"event {event}: not included in the latest tree" in result.output
    assert "is not the envelope this node sent" in result.output


def test_a_deleted_leaf_fails_naming_the_event(region: Copy) -> None:
    first = region.issued()[0]
    tamper(region.registry, f"DELETE FROM log_leaves WHERE leaf_index = {first['leaf_index']}")
    result = region.audit()
    assert result.exit_code == 1, result.output
    assert f"event {first['event_id']}: not included in the latest tree" in result.output


def test_a_changed_stored_hash_fails_the_proofs_computed_from_its_tile(region: Copy) -> None:
    """The registry's database serves a wrong leaf hash in tile 0 (leaf 0 is ZA's or NA's)."""
    tamper(
        region.registry,
        f"UPDATE log_hashes SET hash = sha256(hash) WHERE hash_index = "
        f"{tree.stored_hash_index(0, 0)}",
    )
    result = region.audit()
    assert result.exit_code == 1, result.output
    for row in region.issued():
        assert f"event {row['event_id']}: not included in the latest tree" in result.output


def test_a_rewritten_history_resigned_with_the_log_key_contradicts_the_stored_checkpoints(
    region: Copy,
) -> None:
    """The fork: the registry (it holds the log key) changes leaf 0, rebuilds every hash and
    re-signs its latest checkpoint. BW's own leaves still prove under the new root; the
    checkpoints BW witnessed do not."""
    conn = connect(region.registry)
    try:
        with transaction(conn) as cur:
            cur.execute(
                "UPDATE event_log e SET body = body || '\\x01'::bytea FROM log_leaves l "
                "WHERE l.event_id = e.event_id AND l.leaf_index = 0"
            )
            cur.execute(
                "SELECT l.leaf_index, e.body FROM log_leaves l JOIN event_log e "
                "USING (event_id) ORDER BY 1"
            )
            rebuilt = tree.MemoryHashes()
            for _, body in cur.fetchall():
                rebuilt.append(bytes(body))
            cur.execute("DELETE FROM log_hashes")
            for i, h in enumerate(rebuilt.hashes):
                cur.execute("INSERT INTO log_hashes VALUES (%s, %s)", (i, h))
            cur.execute("SELECT max(tree_size) FROM log_checkpoints WHERE announced")
            (size,) = cur.fetchone()  # type: ignore[misc]
            forked = checkpoint.Checkpoint("kpx/XS", size, tree.tree_hash(size, rebuilt.read))
            text = checkpoint.sign_checkpoint(forked, registry_log.load_key(region.keys))
            cur.execute("DELETE FROM log_cosignatures WHERE tree_size = %s", (size,))
            cur.execute(
                "UPDATE log_checkpoints SET root_hash = %s, note = %s WHERE tree_size = %s",
                (forked.root, text, size),
            )
    finally:
        conn.close()
    result = region.audit()
    assert result.exit_code == 1, result.output
    assert "stored by this node is not consistent with the latest checkpoint" in result.output
    assert "not included in the latest tree" not in result.output  # BW's own bytes are there


def _lying_proxy(
    upstream: str,
    *,
    flip_hash: int | None = None,
    status: int | None = None,
    fail_first: int = 0,
    pad_tiles: bool = False,
) -> Any:
    """An HTTP server in front of the portal. It flips one byte of the hash at position
    ``flip_hash`` of every level-0 tile 000 it relays, answers every request ``status``,
    answers the first ``fail_first`` requests 503, or adds a byte to every hash tile."""
    seen = iter(range(1_000_000))

    async def relay(request: Request) -> Response:
        if status is not None:
            return Response(b"", status)
        if next(seen) < fail_first:
            return Response(b"overloaded", 503)
        async with httpx.AsyncClient() as client:
            got = await client.get(f"{upstream}{request.url.path}")
        body = got.content
        path = request.url.path
        if flip_hash is not None and path.startswith("/log/tile/0/000"):
            at = flip_hash * 32
            body = body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]
        if pad_tiles and path.startswith("/log/tile/") and "/entries/" not in path:
            body += b"\x00"
        return Response(body, got.status_code)

    return Starlette(routes=[Route("/{path:path}", relay)])


def test_transient_failures_of_the_log_are_retried(region: Copy) -> None:
    with serve(_lying_proxy(region.url, fail_first=2)) as flaky:
        result = region.audit("--log-url", flaky)
    assert result.exit_code == 0, result.output


def test_a_tile_of_the_wrong_size_fails_the_audit(region: Copy) -> None:
    with serve(_lying_proxy(region.url, pad_tiles=True)) as mirror:
        result = region.audit("--log-url", mirror)
    assert result.exit_code == 1, result.output
    assert "more than" in result.output and "not included in the latest tree" in result.output


def _behind(region: Copy) -> int:
    """Serve the region's log as it stood before BW's last issue: the checkpoints covering
    it unannounced (as in the second after its batch), and BW's witness holding none of
    them. BW's last issue's leaf index."""
    last = region.issued()[-1]["leaf_index"]
    unannounce = f"UPDATE log_checkpoints SET announced = false WHERE tree_size > {last}"
    tamper(region.registry, unannounce)
    tamper(region.node, f"DELETE FROM witness_checkpoints WHERE tree_size > {last}")
    return int(last)


def test_an_event_past_the_latest_checkpoint_waits_for_one_that_covers_it(
    region: Copy,
) -> None:
    last = _behind(region)

    def announce() -> None:  # the registry's announcer, half a second later
        time.sleep(0.5)
        tamper(region.registry, "UPDATE log_checkpoints SET announced = true")

    announcer = threading.Thread(target=announce)
    announcer.start()
    result = region.audit()
    announcer.join()
    assert result.exit_code == 0, result.output
    served = int(result.output.rsplit("tree ", 1)[1].split(";")[0].split()[0])
    assert served > last


def test_an_event_no_checkpoint_covers_in_time_fails_naming_it(
    region: Copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that withholds an event it accepted from every checkpoint it announces."""
    monkeypatch.setattr(logaudit, "COVERED_WITHIN", 0.5)
    last = _behind(region)
    event = region.issued()[-1]["event_id"]
    result = region.audit()
    assert result.exit_code == 1, result.output
    assert f"event {event}: not included in the latest tree: its leaf {last} is past" in (
        result.output
    )
    assert "no checkpoint announced covers it" in result.output
    assert "waited 0.5 s for a checkpoint to cover the newest events" in result.output


def test_a_mirror_lying_about_one_hash_of_a_tile_fails_the_audit(region: Copy) -> None:
    with serve(_lying_proxy(region.url, flip_hash=0)) as mirror:
        result = region.audit("--log-url", mirror)
    assert result.exit_code == 1, result.output
    assert f"read {mirror}/log: " in result.output
    for row in region.issued():
        assert f"event {row['event_id']}: not included in the latest tree" in result.output


def test_an_honest_mirror_passes_and_the_region_files_url_is_not_used(region: Copy) -> None:
    with serve(_lying_proxy(region.url)) as mirror:
        result = region.audit("--log-url", mirror, public_url=f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("answer", ["nothing listening", "503"])
def test_an_unreachable_log_is_service_unavailable_not_a_failed_audit(
    region: Copy, answer: str
) -> None:
    with ExitStack() as stack:
        if answer == "503":
            url = stack.enter_context(serve(_lying_proxy(region.url, status=503)))
        else:
            url = f"http://127.0.0.1:{free_port()}"
        result = region.audit(public_url=url)
    assert isinstance(result.exception, LogUnavailable), result.output
    assert exit_code(result.exception) == ExitCode.UNAVAILABLE
    assert f"GET {url}/log/checkpoint" in str(result.exception)


def _kpx(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KPX), *args], env=rt.settings.child_env(), capture_output=True, text=True, timeout=120
    )


def test_kpx_node_audit_with_the_portal_down_exits_3_with_one_line(rt: Runtime) -> None:
    """Through the command line's error boundary, in a provisioned region of its own."""
    down = f"http://127.0.0.1:{free_port()}"
    done = _kpx(rt, "node", "audit", "--member", "BW", "--log-url", down)
    assert done.returncode == ExitCode.UNAVAILABLE, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"kpx: service unavailable: GET {down}/log/checkpoint")
    assert "Traceback" not in done.stderr


def test_a_log_url_that_is_not_http_is_a_usage_error(rt: Runtime) -> None:
    done = _kpx(rt, "node", "audit", "--member", "BW", "--log-url", "127.0.0.1:8400")
    assert done.returncode == ExitCode.USAGE, (done.stdout, done.stderr)
    assert "is not an http(s) URL" in done.stderr
