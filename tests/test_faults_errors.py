"""Issue 11, item 12: clear errors instead of tracebacks (the parts done here).

- an IPv6 broker URL (``[::1]``) gives a valid management URL (it raised httpx.InvalidURL);
- "connection refused" on the management API says to enable ``rabbitmq_management``;
- ``kpx region drain`` says what is still moving when it times out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from support.region import provisioned_region
from support.services import unique_name

from exchange.adapters.management import Admin, management_url
from exchange.app.quiescence import drain
from exchange.app.runtime import Runtime
from exchange.errors import BrokerUnavailable
from exchange.wire import topology


def test_an_ipv6_broker_url_gives_a_bracketed_management_url() -> None:
    base, auth = management_url("amqp://kpx:secret@[::1]:5672/%2F")
    assert (base, auth) == ("http://[::1]:15672", ("kpx", "secret"))
    Admin("amqp://guest:guest@[::1]:5672/").close()  # a valid URL for httpx


def test_a_refused_management_connection_names_the_plugin() -> None:
    admin = Admin("amqp://guest:guest@127.0.0.1:5672/", override="http://127.0.0.1:9")
    try:
        with pytest.raises(BrokerUnavailable, match="rabbitmq_management"):
            admin.queues("/")
    finally:
        admin.close()


@pytest.fixture
def rt(tmp_path: Path, amqp_admin_url: str, database_server_url: str) -> Iterator[Runtime]:
    with provisioned_region(tmp_path, unique_name(), amqp_admin_url, database_server_url) as rt:
        yield rt


def test_drain_says_what_is_still_moving_when_it_times_out(rt: Runtime) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rt.amqp_url(None)))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish("", topology.REGISTRY_QUEUE, b"waiting")  # no registry runs
    finally:
        conn.close()
    moving = drain(rt, timeout=7.0)  # past one statistics interval of the management API
    assert f"{topology.REGISTRY_QUEUE}: 1 messages" in moving
