"""The service fixtures work on the real RabbitMQ and PostgreSQL, and clean up after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pika
import psycopg2
import pytest
from support.services import (
    PREFIX,
    Database,
    DatabaseFactory,
    PostgresAdmin,
    RabbitAdmin,
    Vhost,
    VhostFactory,
    is_leftover,
    unique_name,
    with_path,
)

REPO = Path(__file__).resolve().parent.parent


def table_names(database: Database) -> set[str]:
    conn = psycopg2.connect(database.url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cursor.fetchall()}
    finally:
        conn.close()


def test_a_message_published_to_a_fresh_vhost_is_consumed_back(vhost: Vhost) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(vhost.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("kpxt.echo")
        channel.basic_publish(exchange="", routing_key="kpxt.echo", body=b"hello kpx")
        method, _, body = channel.basic_get("kpxt.echo", auto_ack=True)
    finally:
        connection.close()
    assert method is not None
    assert body == b"hello kpx"


def test_two_vhosts_from_the_factory_are_distinct_and_prefixed(make_vhost: VhostFactory) -> None:
    first, second = make_vhost(), make_vhost()
    assert first.name != second.name
    assert first.name.startswith(PREFIX)
    assert second.amqp_url.endswith(f"/{second.name}")


def test_a_table_created_in_one_database_is_absent_from_another(
    database: Database, make_database: DatabaseFactory
) -> None:
    other = make_database()
    conn = psycopg2.connect(database.url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute("CREATE TABLE certificates (id text PRIMARY KEY)")
    finally:
        conn.close()
    assert table_names(database) == {"certificates"}
    assert table_names(other) == set()


def test_a_vhost_is_gone_after_its_factory_closes(
    rabbit_admin: RabbitAdmin, amqp_admin_url: str
) -> None:
    with VhostFactory(rabbit_admin, amqp_admin_url) as make:
        name = make().name
        assert name in rabbit_admin.vhost_names()
    assert name not in rabbit_admin.vhost_names()


def test_a_database_is_gone_after_its_factory_closes_even_with_a_connection_open(
    postgres_admin: PostgresAdmin,
) -> None:
    with DatabaseFactory(postgres_admin) as make:
        database = make()
        left_open = psycopg2.connect(database.url)
        assert database.name in postgres_admin.database_names()
    assert database.name not in postgres_admin.database_names()
    assert left_open.closed or _connection_is_dead(left_open)


def _connection_is_dead(conn: psycopg2.extensions.connection) -> bool:
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    except psycopg2.Error:
        return True
    finally:
        conn.close()
    return False


def test_a_name_of_a_live_process_is_never_a_leftover() -> None:
    name = unique_name()
    assert not is_leftover(name, now=time.time() + 86_400)


def test_an_old_name_of_a_dead_process_is_a_leftover() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    name = f"{PREFIX}{dead.stdout.strip()}_{int(time.time())}_0badcafe"
    assert is_leftover(name, now=time.time() + 86_400)
    assert not is_leftover(name, now=time.time())  # too young: may be another namespace's run
    assert not is_leftover("kpx", now=time.time() + 86_400)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/x"),
        ("postgresql:///postgres", "postgresql:///x"),
        (
            "amqp://guest:guest@127.0.0.1:5672/?heartbeat=5",
            "amqp://guest:guest@127.0.0.1:5672/x?heartbeat=5",
        ),
    ],
)
def test_with_path_replaces_only_the_path(url: str, expected: str) -> None:
    assert with_path(url, "x") == expected


def test_a_service_that_is_down_ends_the_session_with_how_to_start_it() -> None:
    env = os.environ | {"KPX_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_fixtures.py",
            "-k",
            "consumed_back",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "PostgreSQL does not answer" in output
    assert "make services" in output
    assert "skipped" not in output
