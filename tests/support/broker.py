"""Private RabbitMQ nodes for tests that stop, kill or restart a broker.

The shared broker on 5672 is never touched: each :class:`PrivateBroker` is its own Erlang node
(``kpxt-<pid>-<hex>@localhost``) on free ports, with its data, logs, config, enabled plugins
and Erlang cookie under a temporary directory, started with ``rabbitmq-server`` in its own
process group (so a SIGKILL reaches every process of it and nothing else). A restart reuses
the data directory, so durable quorum queues and their messages survive it.

Every wait is bounded; a node that does not come up raises :class:`BrokerStartError` with the
tail of its log (a fault test fails with the reason, never skips). :class:`BrokerCluster`
joins three such nodes. :func:`region_on` provisions a private copy of the example region on
a private broker (``provision.init_broker`` assumes the management API on port 15672, the
shared broker's, so the topology is applied here through the private node's API port).
:func:`read_back` consumes a queue and opens every message, so a test can count what arrived:
distinct event ids, sequences, and whether duplicates are byte-identical.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pika
from pika.spec import BasicProperties

from exchange.adapters import postgres
from exchange.adapters.management import Admin
from exchange.app import provision
from exchange.app.runtime import Runtime
from exchange.app.settings import Settings
from exchange.wire import topology
from exchange.wire.codec import SchemaStore
from exchange.wire.envelope import Envelope, VerifiesEvents, open_envelope
from nodes.service import migrate as prepare_node_database
from support.region import region_text

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class BrokerStartError(RuntimeError):
    """A private broker did not start (the message carries the reason and its log)."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 here): a
# port the kernel picked for free_port() can become the source port of any outgoing
# connection while a killed server is down, and its restart then fails with eaddrinuse.
_STABLE_PORTS = (20_000, 32_000)


def stable_port(taken: frozenset[int] = frozenset()) -> int:
    """A TCP port nobody listens on now, outside the ephemeral range and not in ``taken``: for
    a private server that is killed and restarted on the same port."""
    for _ in range(1000):
        port = random.randint(*_STABLE_PORTS)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # someone listens on it (the shared broker's 25672, …)
            return port
    raise RuntimeError(f"no free port in {_STABLE_PORTS}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


class PrivateBroker:
    """One private RabbitMQ node: start, stop, SIGKILL, restart on the same data."""

    def __init__(self, root: Path, *, cookie_home: Path, plugins: Sequence[str]) -> None:
        self.root = root
        self.name = f"kpxt-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        ports: list[int] = []
        while len(ports) < 3:
            ports.append(stable_port(frozenset(ports)))
        self.amqp_port, self.dist_port, self.management_port = ports
        self.cookie_home = cookie_home
        self._process: subprocess.Popen[bytes] | None = None
        (root / "mnesia").mkdir(parents=True, exist_ok=True)
        (root / "log").mkdir(exist_ok=True)
        (root / "enabled_plugins").write_text(f"[{','.join(plugins)}].\n")
        (root / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = false\n"
        )
        (root / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's (it names the node)

    # -- addresses --

    @property
    def amqp_url(self) -> str:
        """The administrator's URL (guest, allowed from localhost) on the default vhost."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        """The management HTTP API root."""
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def running(self) -> bool:
        """True while the node's process group leader is alive."""
        return self._process is not None and self._process.poll() is None

    def env(self) -> dict[str, str]:
        """The environment of ``rabbitmq-server`` and ``rabbitmqctl`` for this node."""
        env = dict(os.environ)
        env.update(
            HOME=str(self.cookie_home),
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_PID_FILE=str(self.root / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.root / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.root / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    # -- lifecycle --

    def launch(self) -> None:
        """Start ``rabbitmq-server`` in its own process group; :meth:`await_ready` follows."""
        if self.running:
            return
        log = (self.root / "log" / "server.out").open("ab")
        self._process = subprocess.Popen(
            [RABBITMQ_SERVER],
            env=self.env(),
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def await_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the node booted and its AMQP and management ports answer."""
        deadline = time.monotonic() + timeout
        result = self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerStartError(f"{self.name} exited at start\n{self.log_tail()}")
            if result.returncode == 0 and self._answers():
                return
            if result.returncode != 0:  # the CLI could not reach the node yet: ask again
                time.sleep(1.0)
                result = self.ctl("await_startup", "--timeout", "10", timeout=30)
            else:
                time.sleep(0.5)
        raise BrokerStartError(
            f"{self.name} not ready after {timeout:.0f} s: {result.stdout!r} {result.stderr!r}\n"
            f"{self.log_tail()}"
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart on the same data) and wait until it answers."""
        self.launch()
        self.await_ready(timeout)

    def _answers(self) -> bool:
        if not port_open(self.amqp_port):
            return False
        try:
            response = httpx.get(
                self.management_url + "/api/overview", auth=("guest", "guest"), timeout=5
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully (``rabbitmqctl stop``); SIGKILL when that does not finish in time."""
        if not self.running:
            return
        self.ctl("stop", timeout=timeout)
        assert self._process is not None
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL every process of the node (its process group) and reap the leader."""
        if self._process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=30)
        # The beam's children (erl_child_setup, inet_gethost) share the group; wait until the
        # node's ports are free so a restart can bind them again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            port_open(self.amqp_port) or port_open(self.dist_port)
        ):
            time.sleep(0.2)

    def close(self) -> None:
        """Kill the node and remove its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n NODE args`` (bounded); never raises on a non-zero exit."""
        try:
            return subprocess.run(
                [RABBITMQCTL, "-n", self.name, *args],
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the node's logs, for failure messages."""
        text = []
        for path in sorted((self.root / "log").glob("*")):
            with suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)


@contextmanager
def private_broker(plugins: Sequence[str] = ("rabbitmq_management",)) -> Iterator[PrivateBroker]:
    """A started private broker, killed and removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="kpxt-rmq-"))
    broker = PrivateBroker(root / "node", cookie_home=_cookie_home(root), plugins=plugins)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
        shutil.rmtree(root, ignore_errors=True)


def _cookie_home(root: Path) -> Path:
    # The Erlang cookie lives in $HOME; a private one keeps the shared node's cookie out of it
    # and lets the nodes of one cluster (and their rabbitmqctl) share theirs.
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16).upper())
    cookie.chmod(0o400)
    return home


class BrokerCluster:
    """Three (or more) private nodes joined into one cluster."""

    def __init__(self, root: Path, size: int = 3) -> None:
        home = _cookie_home(root)
        self.nodes = [
            PrivateBroker(root / f"n{i}", cookie_home=home, plugins=("rabbitmq_management",))
            for i in range(1, size + 1)
        ]

    def start(self) -> None:
        """Start every node, then join the others to the first; raises BrokerStartError."""
        for node in self.nodes:
            node.launch()  # boot in parallel: each takes several seconds
        for node in self.nodes:
            node.await_ready()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for args in (("stop_app",), ("join_cluster", first.name), ("start_app",)):
                result = node.ctl(*args, timeout=120)
                if result.returncode != 0:
                    raise BrokerStartError(
                        f"{node.name}: rabbitmqctl {' '.join(args)} failed: "
                        f"{result.stdout} {result.stderr}\n{node.log_tail()}"
                    )
            node.await_ready()

    def members(self) -> list[str]:
        """The running nodes of the cluster, as the first running node sees them."""
        node = next(n for n in self.nodes if n.running)
        response = httpx.get(node.management_url + "/api/nodes", auth=("guest", "guest"))
        response.raise_for_status()
        return sorted(n["name"] for n in response.json() if n.get("running"))

    def close(self) -> None:
        """Kill every node and remove their directories."""
        for node in self.nodes:
            node.close()


@contextmanager
def broker_cluster(size: int = 3) -> Iterator[BrokerCluster]:
    """A started cluster of ``size`` private nodes, killed and removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="kpxt-cluster-"))
    cluster = BrokerCluster(root, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- a region on it


@contextmanager
def region_on(
    broker: PrivateBroker, tmp: Path, prefix: str, database_url: str
) -> Iterator[Runtime]:
    """The example region provisioned on a private broker; its databases dropped afterwards."""
    path = tmp / "region.toml"
    path.write_text(region_text(prefix), encoding="utf-8")
    settings = Settings.from_env(
        {
            "KPX_AMQP_URL": broker.amqp_url,
            "KPX_DATABASE_URL": database_url,
            "KPX_STATE_DIR": str(tmp / "state"),
        },
        region=str(path),
    )
    rt = Runtime.load(settings)
    try:
        provision.ensure_keys(rt)
        apply_topology(rt, broker.management_url)
        provision.init_databases(rt, prepare_node_database)
        yield rt
    finally:
        for name in (
            rt.region.registry_database,
            *(rt.region.node(c).database for c in rt.region.node_codes),
        ):
            with suppress(Exception):  # best effort: the database server may be private too
                postgres.drop_database(database_url, name)


def apply_topology(rt: Runtime, management_url: str) -> None:
    """What ``provision.init_broker`` does, through the management API at ``management_url``."""
    definitions = topology.definitions(rt.region.vhost, rt.region.node_codes)
    admin = Admin(rt.settings.amqp_url, override=management_url)
    try:
        for user in (u["name"] for u in definitions["users"]):
            admin.put_user(user, rt.settings.broker_password(rt.region.vhost, user, create=True))
        admin.apply(definitions, admin_user="guest")
    finally:
        admin.close()


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class Received:
    """What a queue held, read back and opened: bodies, properties and their tally."""

    messages: list[tuple[BasicProperties, bytes]]
    events: list[Envelope]

    @property
    def event_ids(self) -> set[str]:
        """The distinct event ids delivered."""
        return {e.event_id for e in self.events}

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each event id."""
        return len(self.events) - len(self.event_ids)

    def duplicates_identical(self) -> bool:
        """True when every repeated event id carried exactly the same bytes each time."""
        first: dict[str, bytes] = {}
        for event in self.events:
            if first.setdefault(event.event_id, event.raw) != event.raw:
                return False
        return True

    def sequences(self, producer: str) -> list[int]:
        """The distinct sequence numbers of ``producer``, sorted."""
        return sorted({e.sequence for e in self.events if e.producer == producer})


def read_back(
    url: str,
    queue: str,
    store: SchemaStore,
    keyring: VerifiesEvents,
    *,
    expect: int,
    timeout: float = 120.0,
    idle: float = 3.0,
) -> Received:
    """Consume ``queue`` (acking) until ``expect`` messages arrived and it stays idle ``idle``
    seconds, or ``timeout`` passes; open every body (verifying its signature)."""
    params = pika.URLParameters(url)
    params.socket_timeout = 10
    conn = pika.BlockingConnection(params)
    messages: list[tuple[BasicProperties, bytes]] = []
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=1000)
        deadline = time.monotonic() + timeout
        for method, props, body in channel.consume(queue, inactivity_timeout=idle):
            if method is None:
                if len(messages) >= expect or time.monotonic() > deadline:
                    break
                continue
            messages.append((props, body))
            if len(messages) % 500 == 0:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if time.monotonic() > deadline:
                break
        channel.cancel()
        channel.basic_ack(0, multiple=True)
    finally:
        conn.close()
    events = [open_envelope(store, keyring, body) for _, body in messages]
    return Received(messages, events)
