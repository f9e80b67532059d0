"""Shared fixtures on the REAL RabbitMQ and PostgreSQL, and the Hypothesis profiles.

Fixtures (nothing is mocked; see tests/support/services.py for the types)::

    amqp_admin_url          session   KPX_AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/
    database_server_url     session   KPX_DATABASE_URL, default
                                      postgresql://postgres@127.0.0.1:5432/postgres
    rabbit_admin            session   RabbitAdmin: the management HTTP API (vhosts, permissions)
    postgres_admin          session   PostgresAdmin: CREATE / DROP DATABASE
    make_vhost              function  factory: make_vhost() -> Vhost(name, amqp_url); every
                                      vhost it made is deleted when the test ends
    vhost, test_vhost       function  one fresh Vhost (the same fixture under two names)
    make_session_vhost      session   factory whose vhosts live until the session ends
    make_database           function  factory: make_database() -> Database(name, url); dropped
                                      when the test ends (open connections are terminated)
    database, test_database function  one fresh Database
    make_session_database   session   factory whose databases live until the session ends

When a collected test needs a service, the session starts by checking that RabbitMQ, its
management API and PostgreSQL all answer, and ends at once with the command to start them if
not (never a skip); then it sweeps ``kpxt_*`` vhosts and databases that crashed runs left.

Hypothesis: profile "ci" (no deadline, 200 examples) when CI=true, else "dev" (no deadline);
``--hypothesis-profile`` overrides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from support.region import provisioned_region
from support.services import (
    START_HINT,
    Database,
    DatabaseFactory,
    PostgresAdmin,
    RabbitAdmin,
    Vhost,
    VhostFactory,
    amqp_url_from_env,
    database_url_from_env,
    management_url_from_env,
    service_problems,
    sweep_leftovers,
    unique_name,
)

if TYPE_CHECKING:
    from exchange.app.runtime import Runtime

# Shared machines and CI are slow and noisy; a deadline there only produces flaky failures.
settings.register_profile("ci", deadline=None, max_examples=200)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in {"true", "1"} else "dev")

SERVICES_DOWN = 3  # pytest exit code when a service is missing: an error, never "no tests"
_SERVICE_FIXTURES = frozenset({"amqp_admin_url", "database_server_url"})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail the whole session up front if a selected test needs a service that is down."""
    if session.config.option.collectonly:
        return
    if not any(_SERVICE_FIXTURES & set(getattr(i, "fixturenames", ())) for i in session.items):
        return  # pure unit tests need no services
    amqp_url = amqp_url_from_env()
    rabbit = RabbitAdmin(amqp_url, management_url_from_env(amqp_url))
    postgres = PostgresAdmin(database_url_from_env())
    try:
        problems = service_problems(amqp_url, rabbit, postgres)
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            pytest.exit(
                f"services needed by the tests are down:\n{lines}\n{START_HINT}", SERVICES_DOWN
            )
        swept = sweep_leftovers(rabbit, postgres)
    finally:
        rabbit.close()
    if swept:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"removed {len(swept)} leftover test vhosts/databases: {swept}")


@pytest.fixture(scope="session")
def amqp_admin_url() -> str:
    return amqp_url_from_env()


@pytest.fixture(scope="session")
def database_server_url() -> str:
    return database_url_from_env()


@pytest.fixture(scope="session")
def rabbit_admin(amqp_admin_url: str) -> Iterator[RabbitAdmin]:
    admin = RabbitAdmin(amqp_admin_url, management_url_from_env(amqp_admin_url))
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def postgres_admin(database_server_url: str) -> PostgresAdmin:
    return PostgresAdmin(database_server_url)


@pytest.fixture
def make_vhost(rabbit_admin: RabbitAdmin, amqp_admin_url: str) -> Iterator[VhostFactory]:
    with VhostFactory(rabbit_admin, amqp_admin_url) as factory:
        yield factory


@pytest.fixture(scope="session")
def make_session_vhost(rabbit_admin: RabbitAdmin, amqp_admin_url: str) -> Iterator[VhostFactory]:
    with VhostFactory(rabbit_admin, amqp_admin_url) as factory:
        yield factory


@pytest.fixture
def vhost(make_vhost: VhostFactory) -> Vhost:
    return make_vhost()


@pytest.fixture
def test_vhost(vhost: Vhost) -> Vhost:
    return vhost


@pytest.fixture
def make_database(postgres_admin: PostgresAdmin) -> Iterator[DatabaseFactory]:
    with DatabaseFactory(postgres_admin) as factory:
        yield factory


@pytest.fixture(scope="session")
def make_session_database(postgres_admin: PostgresAdmin) -> Iterator[DatabaseFactory]:
    with DatabaseFactory(postgres_admin) as factory:
        yield factory


@pytest.fixture
def database(make_database: DatabaseFactory) -> Database:
    return make_database()


@pytest.fixture
def test_database(database: Database) -> Database:
    return database


@pytest.fixture(scope="module")
def rt(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Runtime]:
    """A provisioned region of its own (vhost, databases, keys) for each test module that asks
    for one; a module that needs another region defines its own ``rt``."""
    tmp = tmp_path_factory.mktemp("region")
    with provisioned_region(tmp, unique_name(), amqp_admin_url, database_server_url) as runtime:
        yield runtime
