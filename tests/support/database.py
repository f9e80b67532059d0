"""Private PostgreSQL servers for tests that kill or restart a database.

The shared server on 5432 is never touched: a :class:`PrivateDatabase` is its own cluster
(``initdb``, trust authentication on 127.0.0.1 only) in a temporary directory owned by the
``postgres`` OS user, on a free port, its ``postgres`` process started in its own process group
(as ``postgres`` when the tests run as root). :meth:`kill` SIGKILLs the postmaster and every
backend at once and :meth:`start` runs crash recovery on the same data. (The process group
alone is not enough: PostgreSQL makes each child its own session leader, so a group kill left
the backends running until each noticed the postmaster gone — a busy one finishing its
statement first.)

Every wait is bounded; a server that does not come up raises :class:`DatabaseStartError` with
the tail of its log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg2

from support.broker import stable_port

BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT = 60.0


class DatabaseStartError(RuntimeError):
    """A private PostgreSQL server did not start (the message carries the reason)."""


def _as_postgres() -> dict[str, str]:
    # Popen's user/group (not runuser): the server stays our direct child, so a SIGKILL is
    # reaped at once and a restart never finds the old postmaster still registered.
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


class PrivateDatabase:
    """One private PostgreSQL server: start, stop, SIGKILL, restart on the same data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = stable_port()
        self._process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(BIN / "initdb"), "-D", str(self.data), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8"],
            capture_output=True, text=True, timeout=120, check=False, cwd=root,
            **_as_postgres(),
        )  # fmt: skip
        if result.returncode != 0:
            raise DatabaseStartError(f"initdb failed: {result.stdout}\n{result.stderr}")

    @property
    def url(self) -> str:
        """The server URL (database ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        """True while the postmaster's process group leader is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart after a crash, recovering) and wait until it accepts queries."""
        if not self.running:
            log = (self.root / "server.log").open("ab")
            self._process = subprocess.Popen(
                [str(BIN / "postgres"), "-D", str(self.data),
                 "-p", str(self.port), "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=on", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.root, **_as_postgres(),
            )  # fmt: skip
            log.close()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise DatabaseStartError(f"postgres exited at start\n{self.log_tail()}")
            try:
                psycopg2.connect(self.url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.3)
        raise DatabaseStartError(f"not ready after {timeout:.0f} s: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT to the postmaster); SIGKILL when it does not finish in time."""
        if not self.running:
            return
        assert self._process is not None
        with suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGINT)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once."""
        if self._process is None:
            return
        pid = self._process.pid
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGSTOP)  # it forks no new backend while they are found
        for child in _children(pid):
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=30)

    def close(self) -> None:
        """Kill the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        with suppress(OSError):
            return "\n".join(
                (self.root / "server.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; one that exits meanwhile is skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            # The command name in parentheses may hold spaces: the fields follow the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def private_database() -> Iterator[PrivateDatabase]:
    """A started private PostgreSQL server, killed and removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="kpxt-pg-"))
    server: PrivateDatabase | None = None
    try:
        server = PrivateDatabase(root)
        server.start()
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(root, ignore_errors=True)
