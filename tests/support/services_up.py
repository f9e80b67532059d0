"""A region's long-running services as real ``kpx`` subprocesses, for one test module.

``services_up(rt, env, logs)`` starts the registry, the reconciler and one node per code
(``kpx --region FILE registry run --metrics-port P`` …), each on a free metrics port and in
its own process group, waits (bounded) until every ``/healthz`` answers 200, and yields a
:class:`Fleet`. Tests stop services with :meth:`Fleet.terminate` (SIGTERM, bounded wait, the
exit code returned); whatever still runs when the block ends is killed (SIGKILL), even when
the test failed, so that no service outlives its test. Each service's output goes to
``<logs>/<name>.log``; :meth:`Fleet.tails` quotes their last lines in failure messages.
``services_started`` does the same without waiting for health, and may point the services at
another broker (one that does not answer, to see how they behave cut off).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exchange.app.runtime import Runtime

KPX = Path(sys.executable).with_name("kpx")
READY_TIMEOUT = 60.0  # seconds; twelve Python processes starting at once on two cores
STOP_TIMEOUT = 30.0  # a service drains for a few seconds at most


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel just handed out (held together, so never the same)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """Status and body of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _health(port: int) -> int | None:
    """The /healthz status on ``port``; None while nothing answers there."""
    try:
        return http_get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)[0]
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Service:
    """One running kpx service: its name (``registry``, ``reconciler``, ``node-BW``)."""

    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.proc.pid, signum)  # own session: the group id is its pid


class Fleet:
    """The started services by name, with bounded waits and a forceful last resort."""

    def __init__(self, services: list[Service], env: Mapping[str, str]) -> None:
        self.services = {s.name: s for s in services}
        self.env = dict(env)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def start(self) -> None:
        for s in self.services.values():
            s.log.parent.mkdir(parents=True, exist_ok=True)
            with s.log.open("ab") as out:  # the child keeps its own descriptor
                s.proc = subprocess.Popen(
                    s.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )

    def exited(self) -> dict[str, int]:
        """Services that have exited, with their exit codes."""
        return {
            s.name: s.proc.returncode
            for s in self.services.values()
            if s.proc is not None and s.proc.poll() is not None
        }

    def running(self) -> list[Service]:
        return [s for s in self.services.values() if s.proc is not None and s.proc.poll() is None]

    def wait_serving(self, timeout: float = READY_TIMEOUT) -> dict[str, int]:
        """Every service's /healthz status once each answers at all (200 or 503)."""
        deadline = time.monotonic() + timeout
        statuses: dict[str, int] = {}
        while time.monotonic() < deadline and not self.exited():
            statuses |= {s.name: status for s in self.services.values()
                         if s.name not in statuses and (status := _health(s.port))}  # fmt: skip
            if len(statuses) == len(self.services):
                return statuses
            time.sleep(0.3)
        problems = [f"{name} exited with code {code}" for name, code in self.exited().items()]
        problems += [
            f"{n} not serving after {timeout:.0f} s" for n in self.services.keys() - statuses
        ]
        raise AssertionError("; ".join(problems) + "\n" + self.tails())

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once every /healthz answers 200; AssertionError (with logs) otherwise."""
        deadline = time.monotonic() + timeout
        waiting = list(self.services.values())
        while waiting and time.monotonic() < deadline and not self.exited():
            waiting = [s for s in waiting if _health(s.port) != 200]
            if waiting:
                time.sleep(0.3)
        problems = [f"{name} exited with code {code}" for name, code in self.exited().items()]
        problems += [f"{s.name} not healthy on :{s.port} after {timeout:.0f} s" for s in waiting]
        assert not problems, "; ".join(problems) + "\n" + self.tails()

    def terminate(self, *names: str, timeout: float = STOP_TIMEOUT) -> dict[str, int | None]:
        """SIGTERM the named services (all when none named) together; their exit codes, None
        for one still running after ``timeout`` (it is then killed)."""
        chosen = [self.services[n] for n in names] if names else list(self.services.values())
        alive = [s for s in chosen if s.proc is not None and s.proc.poll() is None]
        for s in alive:
            s.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for s in chosen:
            assert s.proc is not None
            try:
                codes[s.name] = s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[s.name] = None
                s.signal(signal.SIGKILL)
                s.proc.wait(10)
        return codes

    def kill_all(self) -> None:
        """SIGKILL whatever still runs and reap it (teardown; never raises for a dead one)."""
        for s in self.running():
            s.signal(signal.SIGKILL)
        for s in self.services.values():
            if s.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(10)

    def tails(self, lines: int = 8) -> str:
        """The last lines of every service's log, for a failure message."""
        out = []
        for s in self.services.values():
            text = s.log.read_text("utf-8", "replace") if s.log.exists() else ""
            out.append(f"== {s.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)


def service_env(rt: Runtime, amqp_url: str | None = None) -> dict[str, str]:
    """The environment under which ``kpx`` reaches the same region as ``rt`` (through the
    broker at ``amqp_url`` when given)."""
    env = rt.settings.child_env()
    env.pop("KPX_REGION")  # --region names the file
    if amqp_url is not None:
        env["KPX_AMQP_URL"] = amqp_url
    return env


def kpx_argv(rt: Runtime, *args: str) -> list[str]:
    """``kpx --region FILE args…`` for the region of ``rt``."""
    return [str(KPX), "--region", str(rt.settings.region_path), *args]


def plan(rt: Runtime, nodes: list[str], logs: Path) -> list[Service]:
    """The registry, the reconciler and one node per code in ``nodes``, on free ports."""
    ports = free_ports(2 + len(nodes))
    commands = [
        ("registry", ["registry", "run"]),
        ("reconciler", ["reconciler", "run"]),
        *((f"node-{code}", ["node", "run", "--member", code]) for code in nodes),
    ]
    return [
        Service(name, kpx_argv(rt, *args, "--metrics-port", str(port)), port, logs / f"{name}.log")
        for (name, args), port in zip(commands, ports, strict=True)
    ]


@contextlib.contextmanager
def services_started(
    rt: Runtime, logs: Path, nodes: list[str] | None = None, *, amqp_url: str | None = None
) -> Iterator[Fleet]:
    """Start the region's services (every node by default) and yield them at once; kill
    whatever still runs afterwards."""
    codes = list(rt.region.node_codes) if nodes is None else nodes
    fleet = Fleet(plan(rt, codes, logs), service_env(rt, amqp_url))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.kill_all()


@contextlib.contextmanager
def services_up(rt: Runtime, logs: Path, nodes: list[str] | None = None) -> Iterator[Fleet]:
    """:func:`services_started`, yielding once every /healthz answers 200."""
    with services_started(rt, logs, nodes) as fleet:
        fleet.wait_healthy()
        yield fleet
