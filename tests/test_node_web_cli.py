"""``kpx node serve``, ``kpx node users add`` and ``kpx node tokens create|revoke`` as a
national authority runs them: real processes on a provisioned private region."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
from test_node_web_support import KPX, free_port

from exchange.app.runtime import Runtime


def kpx(rt: Runtime, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KPX), *args],
        input=stdin,
        env=rt.settings.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_users_add_reads_the_password_from_stdin_and_refuses_a_short_one(rt: Runtime) -> None:
    done = kpx(
        rt,
        "node",
        "users",
        "add",
        "--member",
        "BW",
        "--username",
        "tmosweu",
        "--role",
        "officer",
        "--full-name",
        "Tebogo Mosweu",
        stdin="a long passphrase\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "added officer tmosweu on node BW"
    again = kpx(
        rt,
        "node",
        "users",
        "add",
        "--member",
        "BW",
        "--username",
        "tmosweu",
        "--role",
        "auditor",
        stdin="another passphrase\n",
    )
    assert again.stdout.strip() == "updated auditor tmosweu on node BW"
    short = kpx(
        rt,
        "node",
        "users",
        "add",
        "--member",
        "BW",
        "--username",
        "x",
        "--role",
        "clerk",
        stdin="short\n",
    )
    assert short.returncode == 2 and "at least 10 characters" in short.stderr


def test_serve_answers_with_a_created_token_until_it_is_revoked_and_stops_on_sigterm(
    rt: Runtime, tmp_path: Path
) -> None:
    created = kpx(
        rt, "node", "tokens", "create", "--member", "BW", "--name", "erp", "--role", "auditor"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("kpx_") and len(token) > 40
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(KPX), "node", "serve", "--member", "BW", "--port", str(port)],
        env=rt.settings.child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "kpx node serve did not answer in 60 s"
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(base + "/api/v1/certificates", headers=headers).status_code == 200
        revoked = kpx(rt, "node", "tokens", "revoke", "--member", "BW", "--name", "erp")
        assert revoked.stdout.strip() == "revoked 1 token(s) named erp"
        assert httpx.get(base + "/api/v1/certificates", headers=headers).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0
