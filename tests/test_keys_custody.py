"""Key custody (DESIGN §15): each member's key is made and kept in its own folder, 0600 in 0700.

``kpx region init`` on one machine runs the node step per node into that node's folder; the
registry's folder then holds the registry's and the reconciler's keys and no member's. The
commands ``kpx node init`` and ``kpx registry keys add|list`` are run as processes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pika
import pytest
from support.region import provisioned_region
from support.services import management_url_from_env, unique_name

from exchange.adapters import postgres
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.errors import KeyFileError
from exchange.wire import topology
from exchange.wire.signing import generate_key, key_line, load_signer, parse_key_line, save_key

KPX = Path(sys.executable).with_name("kpx")


@pytest.fixture(scope="module")
def rt(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("custody")
    old = os.umask(0o022)  # a usual, permissive umask: the folders must be 0700 anyway
    try:
        with provisioned_region(tmp, unique_name(), amqp_admin_url, database_server_url) as r:
            os.umask(old)
            yield r
    finally:
        os.umask(old)


def kpx(rt: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    env = rt.settings.child_env()
    return subprocess.run(
        [str(KPX), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def private_keys(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.key.json"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_registrys_folder_holds_no_members_private_key_after_region_init(
    rt: Runtime,
) -> None:
    registry_folder = rt.settings.registry_dir(rt.region.vhost)
    producers = {load_signer(p).producer for p in private_keys(registry_folder)}
    assert producers == {rt.region.code, rt.reconciler_producer}
    for code in rt.region.node_codes:
        own = private_keys(rt.node_keys_dir(code))
        assert [load_signer(p).producer for p in own] == [code]
        others = rt.settings.vhost_dir(rt.region.vhost) / "nodes"
        elsewhere = [p for p in private_keys(others) if p.parent.parent.name != code]
        assert all(load_signer(p).producer != code for p in elsewhere)


def test_key_files_are_0600_in_0700_folders_and_the_state_folder_is_0700(rt: Runtime) -> None:
    assert mode(rt.settings.state_dir) == 0o700
    assert mode(rt.settings.vhost_dir(rt.region.vhost)) == 0o700
    for path in private_keys(rt.settings.state_dir):
        assert mode(path) == 0o600, path
        assert mode(path.parent) == 0o700, path.parent


def test_the_registry_holds_every_nodes_public_key(rt: Runtime) -> None:
    listed = json.loads(kpx(rt, "registry", "keys", "list", "--json").stdout)
    by_member = {row["member"]: row for row in listed}
    for code in rt.region.node_codes:
        signer = load_signer(private_keys(rt.node_keys_dir(code))[0])
        assert by_member[code]["key_id"] == signer.key_id
        assert key_line(signer.verify_key).endswith(by_member[code]["public_key"])
        assert by_member[code]["revoked_from"] is None


def test_node_init_prints_the_line_that_registry_keys_add_registers(
    rt: Runtime, database_server_url: str
) -> None:
    code = "LS"
    dsn = rt.node_dsn(code)
    conn = postgres.connect(rt.registry_dsn)
    try:
        with postgres.transaction(conn) as cur:
            cur.execute("DELETE FROM authority_keys WHERE producer = %s", (code,))
    finally:
        conn.close()
    done = kpx(rt, "node", "init", "--member", code)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert parse_key_line(line).producer == code and dsn
    added = kpx(rt, "registry", "keys", "add", "--member", code, "--key", line)
    assert added.returncode == 0 and "registered" in added.stdout, added.stderr
    again = kpx(rt, "registry", "keys", "add", "--member", code, "--key", line)
    assert "already registered" in again.stdout
    wrong = kpx(rt, "registry", "keys", "add", "--member", "BW", "--key", line)
    assert wrong.returncode == 1 and "UNKNOWN_PRODUCER" in wrong.stderr


def test_a_mistyped_key_line_is_refused(rt: Runtime) -> None:
    line = key_line(generate_key("BW").verify_key)
    mistyped = line[:-3] + ("A" if line[-3] != "A" else "B") + line[-2:]
    refused = kpx(rt, "registry", "keys", "add", "--member", "BW", "--key", mistyped)
    assert refused.returncode == 2 and "does not match" in refused.stderr  # usage: a bad line


def test_keys_generate_refuses_to_make_a_members_key_at_the_registry(rt: Runtime) -> None:
    refused = kpx(rt, "keys", "generate", "--member", "BW")
    assert refused.returncode != 0 and "node keys rotate" in refused.stderr


@pytest.mark.parametrize("file_mode, folder_mode", [(0o640, 0o700), (0o604, 0o700),
                                                    (0o600, 0o750), (0o600, 0o705)])  # fmt: skip
def test_a_private_key_others_can_read_is_refused(
    tmp_path: Path, file_mode: int, folder_mode: int
) -> None:
    private, _ = save_key(generate_key("BW"), tmp_path / "keys")
    private.chmod(file_mode)
    private.parent.chmod(folder_mode)
    with pytest.raises(KeyFileError, match="readable by group or others"):
        load_signer(private)


def test_save_key_makes_its_folder_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        private, _ = save_key(generate_key("BW"), tmp_path / "a" / "keys")
    finally:
        os.umask(old)
    assert mode(private.parent) == 0o700 and mode(private) == 0o600
    assert load_signer(private).producer == "BW"


def _api(rt: Runtime, path: str) -> Any:
    url = management_url_from_env(rt.settings.amqp_url)
    response = httpx.get(f"{url}/api{path}", auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    return response.json()


def test_node_users_have_per_user_connection_and_channel_limits(rt: Runtime) -> None:
    for code in ("BW", "EU"):
        user = topology.node_user(code, rt.region.vhost)
        limits = _api(rt, f"/user-limits/{quote(user, safe='')}")
        assert limits[0]["value"] == {
            "max-connections": provision.NODE_MAX_CONNECTIONS,
            "max-channels": provision.NODE_MAX_CHANNELS,
        }


def test_a_node_user_can_still_read_another_queues_depth_by_passive_declare(
    rt: Runtime,
) -> None:
    """RabbitMQ checks no permission on a passive queue.declare (3.10 through 3.13), so this
    cannot be restricted at the broker; deploy/README.md says so. If this test starts failing,
    the broker learnt to refuse it: update the README."""
    conn = pika.BlockingConnection(
        pika.URLParameters(rt.amqp_url(topology.node_user("BW", rt.region.vhost)))
    )
    try:
        method = conn.channel().queue_declare(topology.REGISTRY_QUEUE, passive=True).method
        assert method.message_count >= 0
    finally:
        conn.close()
