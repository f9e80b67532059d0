"""``kpx registry serve`` against a whole running region: registry, reconciler, nodes, portal.

Everything is real: the services run as ``kpx`` processes on the shared RabbitMQ and
PostgreSQL (a private vhost and databases), operations go in through ``kpx node submit``, and
the portal is asked over HTTP. The browser tests (Chromium) live in test_registry_web_browser.py
and share this module's fixture through ``portal_region``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.pipeline import Service, confirm_line, issue_line, query
from support.region import provisioned_region

from exchange.app.runtime import Runtime

KPX = [str(Path(sys.executable).with_name("kpx"))]
NODES = ("BW", "ZA", "AE")
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Region:
    """A running region with its portal at ``url``."""

    rt: Runtime
    env: dict[str, str]
    url: str
    services: list[Service]

    def kpx(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KPX, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120
        )

    def submit(self, member: str, *lines: str) -> list[str]:
        """``kpx node submit`` lines; the printed result lines."""
        out = self.kpx("node", "submit", "--member", member, "-", stdin="\n".join(lines) + "\n")
        return out.stdout.splitlines()

    def issue(self, issuer: str, destination: str, **certificate: Any) -> str:
        line = json.loads(issue_line(issuer, destination, datetime.now(UTC)))
        line["certificate"].update(certificate)
        (result,) = self.submit(issuer, json.dumps(line))
        assert " ok " in result, result
        return result.split()[-1]

    def registry(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        return query(self.rt.registry_dsn, sql, params)

    def wait(self, predicate: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        tails = "\n".join(s.tail() for s in self.services)
        raise AssertionError(f"timed out waiting for {what}\n{tails}")

    def accepted(self, certificate_id: str) -> None:
        self.wait(
            lambda: self.registry(
                "SELECT 1 FROM certificates WHERE certificate_id = %s", (certificate_id,)
            ),
            f"{certificate_id} accepted",
        )

    def certificate_body(self, certificate_id: str) -> dict[str, Any]:
        rows = self.registry(
            "SELECT body FROM certificates WHERE certificate_id = %s", (certificate_id,)
        )
        body: dict[str, Any] = rows[0]["body"]
        return body

    def confirm(self, importer: str, certificate_id: str, issuer: str, intact: bool) -> None:
        body = self.certificate_body(certificate_id)
        (result,) = self.submit(importer, confirm_line(certificate_id, issuer, body, intact))
        assert " ok " in result, result


@pytest.fixture(scope="module")
def portal_region(
    tmp_path_factory: pytest.TempPathFactory, amqp_admin_url: str, database_server_url: str
) -> Iterator[Region]:
    tmp = tmp_path_factory.mktemp("portal")
    prefix = f"kpxt_portal_{uuid.uuid4().hex[:8]}"
    with provisioned_region(tmp, prefix, amqp_admin_url, database_server_url) as rt:
        env = dict(os.environ, KPX_REGION=str(rt.settings.region_path),
                   KPX_AMQP_URL=amqp_admin_url, KPX_DATABASE_URL=database_server_url,
                   KPX_STATE_DIR=str(rt.settings.state_dir))  # fmt: skip
        port = free_port()
        argvs = {
            "registry": ["registry", "run", "--metrics-port", str(free_port())],
            "reconciler": ["reconciler", "run", "--metrics-port", str(free_port())],
            **{f"node-{c}": ["node", "run", "--member", c, "--metrics-port", str(free_port())]
               for c in NODES},
            "portal": ["registry", "serve", "--port", str(port), "--verify-rate", "1000"],
        }  # fmt: skip
        services = [Service(n, [*KPX, *a], env, tmp / f"{n}.log") for n, a in argvs.items()]
        region = Region(rt, env, f"http://127.0.0.1:{port}", services)
        for s in services:
            s.start()
        try:
            region.wait(lambda: _up(region.url), "the portal to answer")
            for user, role in (("ana", "analyst"), ("adele", "admin")):
                out = region.kpx("registry", "users", "add", "--username", user, "--role", role,
                                 stdin=PASSWORD + "\n")  # fmt: skip
                assert out.returncode == 0, out.stderr
            yield region
        finally:
            codes = {s.name: s.stop() for s in reversed(services)}
            assert all(code == 0 for code in codes.values()), codes


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ------------------------------------------------------------------ the HTTP API


def test_the_verify_api_gives_exactly_the_public_fields(portal_region: Region) -> None:
    number = portal_region.issue("BW", "AE")
    portal_region.accepted(number)
    answer = httpx.get(f"{portal_region.url}/api/v1/verify/{number}").json()
    assert answer == {
        "certificate_id": number, "valid": True, "status": "VALID", "reason": None,
        "issuing_member": "BW", "destination": "AE",
        "date_of_issue": answer["date_of_issue"], "date_of_expiry": answer["date_of_expiry"],
        "number_of_parcels": 1, "total_carats": "1000.50",
    }  # fmt: skip


def test_a_mistyped_number_is_caught_before_any_lookup(portal_region: Region) -> None:
    answer = httpx.get(f"{portal_region.url}/api/v1/verify/XS-BW-2026-0000001-00").json()
    assert (answer["valid"], answer["status"]) == (False, "MISTYPED")
    unknown = httpx.get(f"{portal_region.url}/api/v1/verify/AE-NEVER-SEEN").json()
    assert unknown["status"] == "UNKNOWN" and unknown["issuing_member"] is None


def test_pages_carry_the_security_headers_and_refuse_large_bodies(portal_region: Region) -> None:
    page = httpx.get(f"{portal_region.url}/verify")
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "<script" not in page.text
    assert page.headers["x-frame-options"] == "DENY"
    big = httpx.post(f"{portal_region.url}/login", content=b"x" * 100_000)
    assert big.status_code == 413


def test_a_console_form_without_its_csrf_token_is_refused(portal_region: Region) -> None:
    with httpx.Client(base_url=portal_region.url) as client:
        form = client.get("/login").text
        login = client.post("/login", data={"username": "ana", "password": PASSWORD})
        assert login.status_code == 403  # the login form's own token is missing too
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        data = {"username": "ana", "password": PASSWORD, "csrf_token": token.group(1)}
        assert client.post("/login", data=data).status_code == 303
        assert client.get("/console/participants").status_code == 200
        refused = client.post("/console/participants", data={"code": "ZA", "action": "suspend",
                                                             "reason": "x"})  # fmt: skip
        assert refused.status_code == 403


def test_console_users_are_stored_with_argon2_and_every_login_is_audited(
    portal_region: Region,
) -> None:
    (row,) = portal_region.registry(
        "SELECT password_hash FROM console_users WHERE username = 'ana'"
    )
    assert row["password_hash"].startswith("$argon2id$")
    acts = {r["action"] for r in portal_region.registry("SELECT action FROM console_audit")}
    assert {"users add"} <= acts


def test_pages_are_served_in_french_and_portuguese(portal_region: Region) -> None:
    fr = httpx.get(f"{portal_region.url}/verify?lang=fr")
    pt = httpx.get(f"{portal_region.url}/verify", headers={"accept-language": "pt-BR,pt;q=0.9"})
    assert '<html lang="fr">' in fr.text and "Vérifier un certificat" in fr.text
    assert '<html lang="pt">' in pt.text and "Verificar um certificado" in pt.text


def test_statistics_downloads_equal_kpx_stats(portal_region: Region) -> None:
    period = f"{datetime.now(UTC).year}-Q{(datetime.now(UTC).month - 1) // 3 + 1}"
    for fmt in ("csv", "json"):
        served = httpx.get(f"{portal_region.url}/statistics.{fmt}?period={period}").content
        printed = portal_region.kpx("stats", "--period", period, "--format", fmt)
        assert printed.returncode == 0, printed.stderr
        assert served == printed.stdout.encode()


def test_public_url_is_the_regions_setting(portal_region: Region) -> None:
    assert portal_region.rt.region.public_url == "http://127.0.0.1:8400"
    assert Path(portal_region.rt.settings.region_path).is_file()
