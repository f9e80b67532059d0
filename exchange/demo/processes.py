"""The demo's services as real processes: start, health-check, watch and stop them.

Each service is ``kpx --region FILE …`` in its own session (process group), so a Ctrl-C in
the terminal reaches only the demo, which then stops the services itself: SIGTERM to each
group, a wait for the services to drain, SIGKILL only after the timeout. Output goes to one
log file per service under ``<state>/demo/logs``; the process ids go to ``<state>/demo/pids``
so that ``--keep`` can say how to stop them later.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_PORT, RECONCILER_PORT, FIRST_NODE_PORT = 9501, 9502, 9510
FIRST_WEB_PORT = 8410  # the node web apps (DESIGN §13's default ports)
PORTAL_PORT = 8400  # the region file's default public_url, so the QR codes' URLs open


def kpx_command() -> list[str]:
    """How to run ``kpx``: the console script beside this interpreter, else the module."""
    script = Path(sys.executable).with_name("kpx")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from exchange.app.cli import main; main()"]


@dataclass
class Service:
    """One long-running kpx service."""

    name: str
    argv: list[str]
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    path: str = "/metrics"  # what the final report links to ("/" for a web app)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{self.path}"


def services(region_file: Path, node_codes: list[str]) -> list[Service]:
    """The registry, the reconciler and one node per member and partner."""
    kpx = [*kpx_command(), "--region", str(region_file)]
    out = [
        Service(
            "registry",
            [*kpx, "registry", "run", "--metrics-port", str(REGISTRY_PORT)],
            REGISTRY_PORT,
        ),
        Service(
            "reconciler",
            [*kpx, "reconciler", "run", "--metrics-port", str(RECONCILER_PORT)],
            RECONCILER_PORT,
        ),
    ]
    portal = [*kpx, "registry", "serve", "--port", str(PORTAL_PORT)]
    out.append(Service("portal", portal, PORTAL_PORT))  # serves /healthz like the others
    for i, code in enumerate(node_codes):
        port = FIRST_NODE_PORT + i
        argv = [*kpx, "node", "run", "--member", code, "--metrics-port", str(port)]
        out.append(Service(f"node {code}", argv, port))
    for i, code in enumerate(node_codes):  # the web apps answer /healthz like the services
        port = FIRST_WEB_PORT + i
        argv = [*kpx, "node", "serve", "--member", code, "--port", str(port)]
        out.append(Service(f"web {code}", argv, port, path="/"))
    return out


class Fleet:
    """Starts, watches and stops a list of services."""

    def __init__(self, members: list[Service], env: dict[str, str], logs: Path) -> None:
        self.services = members
        self.env = env
        self.logs = logs

    def start(self) -> None:
        """Start every service in its own process group, output to its log file."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for s in self.services:
            log = (self.logs / f"{s.name.replace(' ', '-')}.log").open("ab")
            s.proc = subprocess.Popen(
                s.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            log.close()  # the child holds its own descriptor

    def wait_ready(self, timeout: float) -> list[str]:
        """Wait until every /healthz answers 200; return what is not ready (empty: all are)."""
        deadline = time.monotonic() + timeout
        waiting = list(self.services)
        while waiting and time.monotonic() < deadline:
            if self.crashed():
                break
            waiting = [s for s in waiting if not _healthy(s.metrics_port)]
            if waiting:
                time.sleep(0.5)
        problems = [f"{n} exited with code {c}" for n, c in self.crashed()]
        return problems + [f"{s.name} is not healthy on :{s.metrics_port}" for s in waiting]

    def crashed(self) -> list[tuple[str, int]]:
        """Services that have exited (name, exit code)."""
        return [
            (s.name, s.proc.returncode)
            for s in self.services
            if s.proc is not None and s.proc.poll() is not None
        ]

    def stop(self, timeout: float = 40.0) -> dict[str, int]:
        """SIGTERM every group, wait up to ``timeout`` s, then SIGKILL; return exit codes."""
        alive = [s for s in self.services if s.proc is not None and s.proc.poll() is None]
        for s in alive:
            _signal_group(s, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for s in alive:
            assert s.proc is not None
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(s, signal.SIGKILL)
                s.proc.wait()
        return {s.name: s.proc.returncode for s in self.services if s.proc is not None}

    def write_pids(self, path: Path) -> None:
        """One ``<pid> <name>`` line per running service."""
        lines = [f"{s.proc.pid} {s.name}" for s in self.services if s.proc is not None]
        path.write_text("\n".join(lines) + "\n", "utf-8")


def _signal_group(s: Service, signum: signal.Signals) -> None:
    assert s.proc is not None
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(s.proc.pid, signum)  # its own session: the group id is its pid


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def kept_alive(pid_file: Path) -> list[int]:
    """Process ids of a previous ``--keep`` demo that still run kpx."""
    if not pid_file.exists():
        return []
    alive = []
    for line in pid_file.read_text("utf-8").splitlines():
        pid = int(line.split()[0])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"kpx" in cmdline and b"demo" in cmdline:  # our region file is under .../demo/
            alive.append(pid)
    return alive
