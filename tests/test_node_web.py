"""The node's web app in a real browser: Playwright driving Debian's Chromium, headless, on a
live region (registry and nodes running; tests/test_node_web_support.py).

A clerk drafts, another officer authorises, the registry accepts; the importer's officer
confirms from its expected shipments; refusals appear beside their field; French is French;
an XSS probe stays text; the sign-in rate limit holds.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_node_web_support import PASSWORD, LiveRegion, certificate, live_region, wait_until

from exchange.domain.certnumber import regional_number
from nodes.web.app import create_app

pytest_plugins = ["support.browser"]


@pytest.fixture(scope="module")
def region(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_admin_url: str,
    database_server_url: str,
    live_server: Any,
) -> Iterator[LiveRegion]:
    tmp = tmp_path_factory.mktemp("nodeweb")
    with live_region(tmp, amqp_admin_url, database_server_url, live_server) as live:
        yield live


def sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(base + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]:not(.secondary)")


def fill_certificate(
    page: Any, base: str, *, exporter: str = "Okavango Diamond Company", certificate_id: str = ""
) -> None:
    page.goto(base + "/issue")
    page.fill("#certificate_id", certificate_id)
    page.fill("#destination", "NA")
    for field, value in (("name", exporter), ("address", "Gaborone"), ("licence_no", "EX-1")):
        page.fill(f"[id='exporter.{field}']", value)
    for field, value in (
        ("name", "Namdia Trading"),
        ("address", "Windhoek"),
        ("country", "NA"),
        ("licence_no", "IM-9"),
    ):
        page.fill(f"[id='importer.{field}']", value)
    page.fill("[id='parcels[0].carats']", "120.25")
    page.fill("[id='parcels[0].value_usd']", "30000.00")
    page.fill("[id='container.container_id']", "C-77")
    page.fill("[id='container.seal_numbers']", "S-1, S-2")


def test_a_clerk_drafts_two_parcels_an_officer_authorises_and_the_registry_accepts(
    region: LiveRegion, new_page: Any, tmp_path: Path
) -> None:
    base = region.urls["BW"]
    clerk = new_page()
    sign_in(clerk, base, "clara")
    fill_certificate(clerk, base)
    clerk.click("text=Add a parcel")
    clerk.fill("[id='parcels[1].carats']", "80.75")
    clerk.fill("[id='parcels[1].value_usd']", "12000.00")
    clerk.click("text=Update the totals")
    assert clerk.inner_text("#total-carats") == "201.00"
    assert clerk.inner_text("#total-usd") == "42,000.00"
    assert clerk.locator("text=Issue now").count() == 0  # a clerk only drafts
    clerk.click("text=Save the draft")
    assert "/drafts/" in clerk.url
    draft_url = clerk.url
    assert clerk.locator("#authorise").count() == 0

    officer = new_page()
    sign_in(officer, base, "oscar")
    officer.goto(draft_url)
    officer.click("#authorise")
    assert "/certificates/XS-BW-" in officer.url
    certificate_id = officer.url.rsplit("/", 1)[1]

    certificate_url = officer.url
    wait_until(
        lambda: region.query(
            "BW",
            "SELECT 1 FROM node_events e JOIN certificates c ON "
            "c.event_id = e.event_id WHERE c.certificate_id = %s AND "
            "e.registry_state = 'accepted'",
            certificate_id,
        ),
        "the registry's acceptance",
    )
    officer.goto(certificate_url)
    assert officer.inner_text("#registry-state") == "accepted"
    trail = officer.inner_text("#trail")
    assert "user:clara" in trail and "user:oscar" in trail and "authorise" in trail
    # The printed certificate names the officer who validated it (Annex I).
    pdf = tmp_path / "certificate.pdf"
    pdf.write_bytes(officer.request.get(f"{base}/certificates/{certificate_id}/pdf").body())
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "Oscar Mosweu, Ministry of Minerals and Energy — Diamond Hub" in text
    assert "accepted" in text
    rows = region.query(
        "BW",
        "SELECT number_of_parcels FROM (SELECT jsonb_array_length("
        "body -> 'parcels') AS number_of_parcels FROM certificates WHERE "
        "certificate_id = %s) t",
        certificate_id,
    )
    assert rows == [(2,)]


def test_the_officer_who_drafted_may_not_authorise_alone(region: LiveRegion, new_page: Any) -> None:
    base = region.urls["BW"]
    page = new_page()
    sign_in(page, base, "olga")
    fill_certificate(page, base)
    page.click("text=Save the draft")
    assert page.locator("#four-eyes").is_visible()
    assert page.locator("#authorise").count() == 0


def test_the_importers_officer_confirms_from_the_expected_shipments(
    region: LiveRegion, new_page: Any
) -> None:
    with httpx.Client(
        base_url=region.urls["BW"], headers={"Authorization": f"Bearer {region.tokens['officer']}"}
    ) as api:
        [result] = api.post(
            "/api/v1/operations", json=[{"op": "issue", "certificate": certificate()}]
        ).json()["results"]
    cid = result["certificate_id"]
    wait_until(
        lambda: region.query(
            "NA", "SELECT 1 FROM expected_shipments WHERE certificate_id = %s", cid
        ),
        "the ShipmentExpected at NA",
    )
    base = region.urls["NA"]
    page = new_page()
    sign_in(page, base, "nuno")
    page.goto(base + "/shipments")
    page.click(f"a[href='/shipments/{cid}/confirm']")
    assert page.input_value("#carats") == "201.00"  # pre-filled from the notice
    assert page.input_value("#parcels") == "2"
    page.click("#confirm")
    assert cid in page.inner_text(".flash")
    rows = region.query(
        "NA", "SELECT confirmed FROM expected_shipments WHERE certificate_id = %s", cid
    )
    assert rows == [(True,)]


def test_a_mistyped_certificate_number_shows_its_refusal_beside_the_field(
    region: LiveRegion, new_page: Any
) -> None:
    number = regional_number("XS", "BW", date.today().year, 4242)
    mistyped = number[:-1] + ("0" if number[-1] != "0" else "1")
    base = region.urls["BW"]
    page = new_page()
    sign_in(page, base, "oscar")
    drafts_before = region.query("BW", "SELECT count(*) FROM drafts")
    fill_certificate(page, base, certificate_id=mistyped)
    page.click("text=Save the draft")
    assert region.query("BW", "SELECT count(*) FROM drafts") == drafts_before  # nothing written
    error = page.locator("[id='certificate_id-error']")
    assert error.is_visible()
    assert "BAD_CERTIFICATE_NUMBER" in error.inner_text()
    assert page.get_attribute("#certificate_id", "aria-invalid") == "true"
    assert page.input_value("[id='exporter.name']") == "Okavango Diamond Company"  # kept


def test_an_officer_voids_a_certificate_and_issues_its_replacement_from_it(
    region: LiveRegion, new_page: Any
) -> None:
    with httpx.Client(
        base_url=region.urls["BW"],
        headers={"Authorization": f"Bearer {region.tokens['officer']}"},
    ) as api:
        [old] = api.post(
            "/api/v1/operations", json=[{"op": "issue", "certificate": certificate()}]
        ).json()["results"]
    base = region.urls["BW"]
    page = new_page()
    sign_in(page, base, "oscar")
    page.goto(f"{base}/certificates/{old['certificate_id']}")
    page.click("text=Issue a replacement from this certificate")
    assert page.input_value("#destination") == "NA"
    assert page.input_value("[id='parcels[1].carats']") == "100.50"
    page.goto(f"{base}/certificates/{old['certificate_id']}")
    page.fill("#reason", "seal number mistyped")
    page.click("button:has-text('Void')")
    assert page.inner_text("#local-state") == "voided"
    assert "void" in page.inner_text("#trail")


def test_a_french_speaking_officer_sees_french(region: LiveRegion, new_page: Any) -> None:
    base = region.urls["BW"]
    page = new_page("fr-FR")
    page.goto(base + "/login")
    assert page.inner_text("h1") == "Se connecter"
    sign_in(page, base, "oscar")
    assert page.inner_text("h1") == "Certificats"
    page.goto(base + "/issue")
    assert page.inner_text("h1") == "Émettre un certificat"
    page.click("a[hreflang=pt]")
    assert page.inner_text("h1") == "Emitir um certificado"


def test_an_xss_probe_in_a_certificate_field_stays_text(region: LiveRegion, new_page: Any) -> None:
    probe = "<script>window.__xss = 1</script><img src=x onerror='window.__xss = 2'>"
    base = region.urls["BW"]
    page = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, base, "clara")
    fill_certificate(page, base, exporter=probe)
    page.click("text=Save the draft")
    assert probe in page.inner_text("main")  # shown as the text it is
    assert page.evaluate("window.__xss") is None
    assert dialogs == []


def test_pages_stay_small(region: LiveRegion, new_page: Any) -> None:
    base = region.urls["BW"]
    page = new_page()
    sizes: list[int] = []
    page.on("response", lambda r: sizes.append(len(r.body())) if r.ok else None)
    sign_in(page, base, "audrey")
    for path in ("/certificates", "/issue", "/shipments", "/drafts"):
        sizes.clear()
        page.goto(base + path)
        page.wait_for_load_state("load")
        assert sum(sizes) < 100_000, (path, sizes)


def test_the_sign_in_rate_limit_holds_even_for_the_right_password(
    region: LiveRegion, new_page: Any, live_server: Any
) -> None:
    # A server of its own, so that the other tests' sign-ins are not limited.
    with live_server(create_app(region.webs["BW"])) as base:
        page = new_page()
        for _ in range(5):
            sign_in(page, base, "oscar", "wrong password")
            assert page.locator("#login-error").is_visible()
        sign_in(page, base, "oscar")
        assert "too many failed sign-ins" in page.inner_text("main")
        assert page.url.endswith("/login")


def test_production_is_declared_and_revised_from_its_page(
    region: LiveRegion, new_page: Any
) -> None:
    base = region.urls["BW"]
    page = new_page()
    sign_in(page, base, "oscar")
    for carats in ("5000.00", "5200.00"):
        page.goto(base + "/production")
        page.fill("#period", "2026-H1")
        page.fill("#producer", "Jwaneng")
        page.fill("#carats", carats)
        page.fill("#value_usd", "1000000.00")
        page.click("button:has-text('Declare')")
    row = page.locator("tr", has_text="Jwaneng").inner_text()
    assert "5,200.00" in row and row.rstrip().endswith("1")  # one revision, not a sum
    page.fill("#period", "2026-Q1")
    page.fill("#producer", "Orapa")
    page.fill("#carats", "1.00")
    page.fill("#value_usd", "1.00")
    page.click("button:has-text('Declare')")
    assert "2026-H1" in page.inner_text("[id='period-error']")


def test_discrepancies_rejections_drafts_and_the_audit_export_are_listed(
    region: LiveRegion, new_page: Any
) -> None:
    # What the node's inbox stores when the reconciler and the registry answer.
    region.query(
        "BW",
        "INSERT INTO discrepancies (discrepancy_id, kind, certificate_id, period, "
        "participants, detail, raised_on) VALUES (991, 'SEAL_BROKEN', 'XS-BW-X', NULL, "
        "ARRAY['BW','NA'], 'the seal was broken on arrival', '2026-11-30') "
        "RETURNING 1",
    )
    with httpx.Client(
        base_url=region.urls["BW"],
        headers={"Authorization": f"Bearer {region.tokens['officer']}"},
    ) as api:
        [issued] = api.post(
            "/api/v1/operations", json=[{"op": "issue", "certificate": certificate()}]
        ).json()["results"]
    # Once the registry's own answer is in, so that it cannot overwrite the rejection made here.
    wait_until(
        lambda: region.query(
            "BW",
            "SELECT 1 FROM node_events WHERE subject = %s AND registry_state <> 'pending'",
            issued["certificate_id"],
        ),
        "the registry's answer",
    )
    region.query(
        "BW",
        "UPDATE node_events SET registry_state = 'rejected', registry_reason = 'NOT_ALLOWED', "
        "registry_detail = 'probe' WHERE subject = %s RETURNING 1",
        issued["certificate_id"],
    )
    base = region.urls["BW"]
    page = new_page()
    sign_in(page, base, "audrey")
    page.goto(base + "/discrepancies?q=SEAL_BROKEN")
    assert "the seal was broken on arrival" in page.inner_text("main")
    page.goto(base + "/rejections?q=not_allowed")
    assert "NOT_ALLOWED" in page.inner_text("main")
    page.goto(base + "/drafts?all=1")
    assert page.locator("tbody tr").count() >= 1
    assert page.locator("a[href='/issue']").count() >= 1
    with page.expect_download() as download:
        page.evaluate("location.href = '/audit.csv'")
    text = Path(download.value.path()).read_text()
    assert text.startswith("audit_id,at,actor,role,address,action,subject,detail")
    assert "user:audrey" in text


def test_the_pages_work_without_javascript(region: LiveRegion, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        base = region.urls["BW"]
        sign_in(page, base, "clara")
        fill_certificate(page, base)
        page.click("text=Add a parcel")
        page.fill("[id='parcels[1].carats']", "10.00")
        page.fill("[id='parcels[1].value_usd']", "100.00")
        page.click("text=Save the draft")
        assert "/drafts/" in page.url
        assert page.locator("script").count() == 0
    finally:
        context.close()
