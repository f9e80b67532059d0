"""``kpx registry serve`` against a whole running region: registry, reconciler, nodes, portal.

Everything is real: the services run as ``kpx`` processes on the shared RabbitMQ and
PostgreSQL (a private vhost and databases), operations go in through ``kpx node submit``, and
the portal is asked over HTTP. The browser tests (headless Chromium through Playwright) share
the same region; their screenshots are the README's, under docs/screenshots/.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from support.pipeline import Service, confirm_line, issue_line, query
from support.region import provisioned_region

from exchange.app.runtime import Runtime
from exchange.wire import topology

pytest_plugins = ["support.browser"]  # the browser fixtures (headless Debian Chromium)

KPX = [str(Path(sys.executable).with_name("kpx"))]
NODES = ("BW", "ZA", "AE")
PASSWORD = "correct horse battery staple"


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


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
        port, registry, reconciler, *nodes = free_ports(3 + len(NODES))
        argvs = {
            "registry": ["registry", "run", "--metrics-port", str(registry)],
            "reconciler": ["reconciler", "run", "--metrics-port", str(reconciler)],
            **{f"node-{c}": ["node", "run", "--member", c, "--metrics-port", str(p)]
               for c, p in zip(NODES, nodes, strict=True)},
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


def test_the_keys_are_published_as_kpx_registry_keys_list_prints_them(
    portal_region: Region,
) -> None:
    printed = portal_region.kpx("registry", "keys", "list", "--json")
    assert printed.returncode == 0, printed.stderr
    listed = json.loads(printed.stdout)
    assert {k["member"] for k in listed} >= set(NODES)
    assert httpx.get(f"{portal_region.url}/api/v1/keys").json() == listed
    page = httpx.get(f"{portal_region.url}/keys?lang=fr")
    assert page.status_code == 200 and "<script" not in page.text
    assert "Clés de signature des membres" in page.text
    assert all(k["key_id"] in page.text and k["public_key"] in page.text for k in listed)
    assert 'href="/keys"' in httpx.get(f"{portal_region.url}/log").text  # nav and explanation


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


def test_signing_out_ends_every_session_of_the_user(portal_region: Region) -> None:
    with (
        console_client(portal_region, "ana") as first,
        console_client(portal_region, "ana") as other,
    ):
        copied = dict(first.cookies)
        assert first.get("/console/audit").status_code == 200
        page = first.get("/console/audit").text
        assert first.post("/logout", data={"csrf_token": csrf_of(page)}).status_code == 303
        with httpx.Client(base_url=portal_region.url, cookies=copied) as thief:
            assert thief.get("/console/audit").status_code == 303  # to the login page
        assert other.get("/console/audit").status_code == 303  # the other session ended too


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


def test_the_log_is_served_as_tlog_tiles(portal_region: Region) -> None:
    portal_region.accepted(portal_region.issue("ZA", "BW"))
    text = httpx.get(f"{portal_region.url}/log/checkpoint").text
    origin, size_line, _root = text.split("\n")[:3]
    assert origin == f"kpx/{portal_region.rt.region.code}" and text.count("\u2014 ") >= 1
    size = min(int(size_line), 256)
    suffix = "000" if size == 256 else f"000.p/{size}"
    hashes = httpx.get(f"{portal_region.url}/log/tile/0/{suffix}").content
    bundle = httpx.get(f"{portal_region.url}/log/tile/entries/{suffix}").content
    assert len(hashes) == 32 * size
    leaves, at = [], 0
    while at < len(bundle):  # big-endian uint16 length, then the envelope bytes
        length = int.from_bytes(bundle[at : at + 2], "big")
        leaves.append(hashlib.sha256(b"\x00" + bundle[at + 2 : at + 2 + length]).digest())
        at += 2 + length
    assert b"".join(leaves) == hashes  # each leaf hash is H(0x00 || the event's bytes)
    assert httpx.get(f"{portal_region.url}/log/tile/0/999").status_code == 404


@contextmanager
def console_client(region: Region, username: str) -> Iterator[httpx.Client]:
    """An httpx client logged in to the console (through the login form and its token)."""
    with httpx.Client(base_url=region.url) as client:
        client.post("/login", data={"username": username, "password": PASSWORD,
                                    "csrf_token": csrf_of(client.get("/login").text)})  # fmt: skip
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


def seal_broken(region: Region) -> int:
    """A SEAL_BROKEN discrepancy raised by the reconciler; its id."""
    number = region.issue("BW", "ZA")
    region.accepted(number)
    region.confirm("ZA", number, "XS", intact=False)
    query = "SELECT id FROM recon.discrepancies WHERE certificate_id = %s AND kind = 'SEAL_BROKEN'"
    region.wait(lambda: region.registry(query, (number,)), "SEAL_BROKEN raised")
    return int(region.registry(query, (number,))[0]["id"])


def test_the_command_line_resolve_keeps_every_note_and_the_console_reopens(
    portal_region: Region,
) -> None:
    number = seal_broken(portal_region)
    for note in ("first look: seal replaced", "second look: contents correct"):
        out = portal_region.kpx("registry", "discrepancies", "resolve", str(number), "--note", note)
        assert out.returncode == 0, out.stderr
    with console_client(portal_region, "ana") as client:
        page = client.get(f"/console/discrepancies/{number}").text
        reopened = client.post(
            f"/console/discrepancies/{number}",
            data={
                "action": "reopen",
                "note": "the importer disputes it",
                "csrf_token": csrf_of(page),
            },
        )
        assert reopened.status_code == 303
        empty = client.post(f"/console/discrepancies/{number}", data={
            "action": "resolve", "note": "  ", "csrf_token": csrf_of(page)})  # fmt: skip
        assert empty.status_code == 400 and "a note is required" in empty.text
    notes = portal_region.registry(
        "SELECT status, note, author FROM discrepancy_notes WHERE discrepancy_id = %s ORDER BY id",
        (number,),
    )
    assert [tuple(n.values()) for n in notes] == [
        ("RESOLVED", "first look: seal replaced", "cli"),
        ("RESOLVED", "second look: contents correct", "cli"),
        ("OPEN", "the importer disputes it", "ana"),
    ]  # fmt: skip


def test_an_admin_sees_a_dead_letter_with_its_reason_and_reinjects_it(
    portal_region: Region,
) -> None:
    rt, vhost = portal_region.rt, portal_region.rt.region.vhost
    user = topology.node_user("BW", vhost)
    url = rt.settings.amqp_url_for(vhost, user)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        props = pika.BasicProperties(message_id=str(uuid.uuid4()), user_id=user, delivery_mode=2)
        conn.channel().basic_publish(topology.EVENTS, "BW.CertificateIssued", b"not avro", props)
    finally:
        conn.close()
    with console_client(portal_region, "adele") as client:
        portal_region.wait(lambda: props.message_id in client.get("/console/dead-letters").text,
                           "the dead letter listed")  # fmt: skip
        page = client.get("/console/dead-letters").text
        assert "BW.CertificateIssued" in page
        done = client.post("/console/dead-letters/reinject", data={
            "message_id": props.message_id, "csrf_token": csrf_of(page)})  # fmt: skip
        assert done.status_code == 303
    acts = portal_region.registry(
        "SELECT actor, target FROM console_audit WHERE action = 'reinject'"
    )
    assert acts == [{"actor": "adele", "target": props.message_id}]
    rows = portal_region.registry(  # the page and its button use the dead-letter store
        "SELECT status, reinjected_by FROM dead_letters WHERE message_id = %s", (props.message_id,)
    )
    assert rows[0]["reinjected_by"] == "adele"
    with console_client(portal_region, "ana") as client:
        page = client.get("/console/dead-letters").text
        refused = client.post("/console/dead-letters/reinject", data={
            "message_id": props.message_id, "csrf_token": csrf_of(page)})  # fmt: skip
        assert refused.status_code == 403  # an analyst may look, not re-inject


# ------------------------------------------------------------------ in a real browser

SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}  # fmt: skip
HOSTILE = "<script>document.title='owned'</script>"


def qr_text(text: str, tmp: Path) -> str:
    """Encode ``text`` as a QR code image and read it back with zbarimg (what a phone does)."""
    import segno

    image = tmp / "qr.png"
    segno.make(text, error="m").save(str(image), scale=6)
    out = subprocess.run(["zbarimg", "--quiet", "--raw", str(image)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def phone(browser: Any) -> Any:
    context = browser.new_context(locale="en-GB", **PHONE)
    context.set_default_timeout(15_000)
    return context


def log_in(browser: Any, url: str, username: str) -> Any:
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{url}/console")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/**")
    return page


def test_a_phone_sees_valid_then_do_not_accept_after_a_void(
    portal_region: Region, browser: Any, tmp_path: Path
) -> None:
    number = portal_region.issue("BW", "AE")
    portal_region.accepted(number)
    printed = f"{portal_region.rt.region.public_url}/verify/{number}"
    scanned = qr_text(printed, tmp_path)
    assert scanned == printed
    path = scanned.removeprefix(portal_region.rt.region.public_url)
    context = phone(browser)
    page = context.new_page()
    page.goto(portal_region.url + path)
    assert page.locator(".verdict .big").inner_text() == "VALID"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    page.screenshot(path=str(SHOTS / "verify-valid-phone.png"), full_page=True)
    void = json.dumps({"op": "void", "certificate_id": number, "reason": "shipment cancelled"})
    assert " ok " in portal_region.submit("BW", void)[0]
    portal_region.wait(lambda: portal_region.registry(
        "SELECT 1 FROM certificates WHERE certificate_id = %s AND state = 'VOIDED'", (number,)
    ), "the void")  # fmt: skip
    # The portal's cache hears of the void when its notification arrives, milliseconds later.
    api = f"{portal_region.url}/api/v1/verify/{number}"
    portal_region.wait(lambda: not httpx.get(api).json()["valid"], "the void's notification", 2.0)
    page.reload()
    assert page.locator(".verdict .big").inner_text() == "DO NOT ACCEPT"
    assert "cancelled" in page.locator(".verdict .why").inner_text()
    page.screenshot(path=str(SHOTS / "verify-do-not-accept-phone.png"), full_page=True)
    context.close()


def test_an_analyst_filters_resolves_and_adds_a_second_note(
    portal_region: Region, browser: Any
) -> None:
    number = portal_region.issue("BW", "ZA")
    portal_region.accepted(number)
    portal_region.confirm("ZA", number, "XS", intact=False)
    portal_region.wait(lambda: portal_region.registry(
        "SELECT 1 FROM recon.discrepancies WHERE certificate_id = %s AND kind = 'SEAL_BROKEN'",
        (number,)), "SEAL_BROKEN raised")  # fmt: skip
    page = log_in(browser, portal_region.url, "ana")
    page.select_option("#kind", "SEAL_BROKEN")
    page.fill("#participant", "ZA")
    page.click("form.filters button")
    rows = page.locator("table.worklist tr", has_text=number)
    assert rows.count() == 1 and page.locator("table.worklist tr", has_text="CARAT").count() == 0
    page.screenshot(path=str(SHOTS / "console-worklist.png"), full_page=True)
    rows.locator("a").click()
    page.fill("#note", "Seal replaced at the border post; contents re-weighed and correct.")
    page.click("button[value=resolve]")
    assert page.locator("#status").inner_text() == "RESOLVED"
    page.fill("#note", "Customs report filed under ref. 2026/114.")
    page.click("button[value=resolve]")
    notes = page.locator("ol.notes .note").all_inner_texts()
    assert notes == ["Seal replaced at the border post; contents re-weighed and correct.",
                     "Customs report filed under ref. 2026/114."]  # fmt: skip
    page.screenshot(path=str(SHOTS / "console-discrepancy.png"), full_page=True)
    acts = portal_region.registry(
        "SELECT actor, action FROM console_audit WHERE action = 'resolve'"
    )
    assert [(a["actor"], a["action"]) for a in acts] == [("ana", "resolve")] * 2
    page.context.close()


def test_an_admin_suspends_and_the_next_certificate_to_it_is_refused(
    portal_region: Region, browser: Any
) -> None:
    analyst = log_in(browser, portal_region.url, "ana")
    analyst.goto(f"{portal_region.url}/console/participants")
    assert analyst.locator("#p-IN button").count() == 0  # an analyst cannot suspend
    analyst.context.close()
    page = log_in(browser, portal_region.url, "adele")
    page.goto(f"{portal_region.url}/console/participants")
    page.fill("#p-IN input[name=reason]", "KP plenary decision 2026/7")
    page.click("#p-IN button[value=suspend]")
    assert page.locator("#p-IN .status").inner_text() == "SUSPENDED"
    page.screenshot(path=str(SHOTS / "console-participants.png"), full_page=True)
    line = json.loads(issue_line("BW", "IN", datetime.now(UTC)))
    (result,) = portal_region.submit("BW", json.dumps(line))
    if " ok " in result:  # the node had not heard yet: the registry refuses it
        number = result.split()[-1]
        portal_region.wait(lambda: portal_region.registry(
            "SELECT 1 FROM event_log WHERE certificate_id = %s AND reason = %s",
            (number, "PARTICIPANT_SUSPENDED")), "the registry's refusal")  # fmt: skip
    else:
        assert "refused PARTICIPANT_SUSPENDED" in result, result
    (act,) = portal_region.registry("SELECT actor, target, detail FROM console_audit"
                                    " WHERE action = 'suspend'")  # fmt: skip
    assert act == {"actor": "adele", "target": "IN", "detail": "KP plenary decision 2026/7"}
    page.context.close()


def test_the_statistics_page_shows_charts_and_its_csv_equals_kpx_stats(
    portal_region: Region, browser: Any, tmp_path: Path
) -> None:
    portal_region.accepted(portal_region.issue("ZA", "AE"))
    context = browser.new_context(locale="en-GB", accept_downloads=True)
    page = context.new_page()
    page.goto(f"{portal_region.url}/statistics")
    assert page.locator("figure svg.chart").count() >= 6
    assert page.locator("figure svg rect").count() >= 1
    page.screenshot(path=str(SHOTS / "statistics.png"), full_page=True)
    period = page.locator("#period").input_value()
    with page.expect_download() as info:
        page.click("a[href^='/statistics.csv']")
    downloaded = Path(info.value.path()).read_bytes()
    printed = portal_region.kpx("stats", "--period", period, "--format", "csv")
    assert downloaded == printed.stdout.encode()
    context.close()


def test_a_script_in_a_certificate_field_stays_text_everywhere(
    portal_region: Region, browser: Any
) -> None:
    exporter = {"name": HOSTILE, "address": HOSTILE, "country": "BW", "licence_no": "BW-EX-1"}
    number = portal_region.issue("BW", "ZA", exporter=exporter)
    portal_region.accepted(number)
    portal_region.confirm("ZA", number, "XS", intact=False)
    portal_region.wait(
        lambda: portal_region.registry(
            "SELECT 1 FROM recon.discrepancies WHERE certificate_id = %s", (number,)
        ),
        "raised",
    )
    (item,) = portal_region.registry(
        "SELECT id FROM recon.discrepancies WHERE certificate_id = %s", (number,))  # fmt: skip
    page = log_in(browser, portal_region.url, "ana")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (f"/console/discrepancies/{item['id']}", "/console/discrepancies",
                 f"/verify/{number}", "/verify/" + HOSTILE, "/statistics"):  # fmt: skip
        page.goto(portal_region.url + path)
        assert page.title() != "owned" and page.locator("main script").count() == 0
    page.goto(f"{portal_region.url}/console/discrepancies/{item['id']}")
    assert page.locator("main").count() == 1, page.content()[:2000]
    assert HOSTILE in page.locator("main").inner_text()
    page.fill("#note", HOSTILE)
    page.click("button[value=resolve]")
    assert page.locator("ol.notes .note").last.inner_text() == HOSTILE
    assert page.title() != "owned" and not dialogs
    page.context.close()
