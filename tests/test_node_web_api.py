"""The node's HTTP API, its printable certificate and hostile input, over real sockets on a
live region (registry and nodes running; tests/test_node_web_support.py)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from test_node_web_support import LiveRegion, certificate, live_region

pytest_plugins = ["support.browser"]


@pytest.fixture(scope="module")
def region(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_admin_url: str,
    database_server_url: str,
    live_server: Any,
) -> Iterator[LiveRegion]:
    tmp = tmp_path_factory.mktemp("nodeweb-api")
    with live_region(tmp, amqp_admin_url, database_server_url, live_server) as live:
        yield live


def api(region: LiveRegion, role: str = "officer") -> httpx.Client:
    return httpx.Client(
        base_url=region.urls["BW"],
        timeout=30,
        headers={"Authorization": f"Bearer {region.tokens[role]}"},
    )


def post(region: LiveRegion, ops: Any, role: str = "officer") -> httpx.Response:
    with api(region, role) as client:
        return client.post("/api/v1/operations", json=ops)


def test_operations_are_applied_and_a_retried_request_id_gets_the_same_answer(
    region: LiveRegion,
) -> None:
    ops = [
        {"op": "issue", "request_id": "erp-api-1", "certificate": certificate()},
        {"op": "issue", "request_id": "erp-api-2", "certificate": certificate(destination="SO")},
    ]
    first = post(region, ops)
    assert first.status_code == 200
    ok, refused = first.json()["results"]
    assert ok["status"] == "ok" and ok["certificate_id"].startswith("XS-BW-")
    assert refused == {
        "line": 2,
        "status": "refused",
        "certificate_id": None,
        "subject": None,
        "reason": "NOT_A_PARTICIPANT",
        "sentence": refused["sentence"],
        "already_applied": False,
    }
    again = post(region, ops[:1]).json()["results"][0]
    assert again["certificate_id"] == ok["certificate_id"] and again["already_applied"]
    rows = region.query(
        "BW", "SELECT count(*) FROM applied_requests WHERE request_id = 'erp-api-1'"
    )
    assert rows == [(1,)]


def test_every_act_is_recorded_with_who_when_and_from_where(region: LiveRegion) -> None:
    [result] = post(region, [{"op": "issue", "certificate": certificate()}]).json()["results"]
    rows = region.query(
        "BW",
        "SELECT actor, role, address, action FROM audit_log WHERE subject = %s",
        result["certificate_id"],
    )
    assert rows == [("token:erp", "officer", "127.0.0.1", "issue")]


def test_unknown_json_fields_are_refused_with_their_path_and_nothing_is_written(
    region: LiveRegion,
) -> None:
    before = region.query("BW", "SELECT count(*) FROM certificates")
    bad = certificate()
    bad["exporter"]["nickname"] = "x"
    results = post(
        region,
        [
            {"op": "issue", "certificate": bad},
            {"op": "issue", "certificate": certificate(), "colour": "blue"},
        ],
    ).json()
    first, second = results["results"]
    assert (first["reason"], first["sentence"]) == (
        "SCHEMA_INVALID",
        "exporter.nickname is not a known field",
    )
    assert (second["reason"], second["sentence"]) == (
        "SCHEMA_INVALID",
        "colour is not a known field",
    )
    assert region.query("BW", "SELECT count(*) FROM certificates") == before


def test_a_10_mb_body_is_refused_with_413_before_it_is_read(region: LiveRegion) -> None:
    host, port = region.urls["BW"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v1/operations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            f"{region.tokens['officer']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413")


def test_without_a_token_the_api_answers_401_problem_details(region: LiveRegion) -> None:
    answer = httpx.get(region.urls["BW"] + "/api/v1/certificates")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    bad = httpx.get(
        region.urls["BW"] + "/api/v1/certificates", headers={"Authorization": "Bearer kpx_forged"}
    )
    assert bad.status_code == 401


def test_an_auditor_token_reads_but_may_not_apply_operations(region: LiveRegion) -> None:
    answer = post(region, [{"op": "issue", "certificate": certificate()}], role="auditor")
    assert answer.status_code == 403 and answer.json()["status"] == 403
    with api(region, "auditor") as client:
        assert client.get("/api/v1/certificates").status_code == 200


def test_a_revoked_token_no_longer_works(region: LiveRegion) -> None:
    from nodes.web import access

    nw = region.webs["BW"]
    token = nw.pool.run(lambda cur: access.create_token(cur, "old-erp", "officer"))
    headers = {"Authorization": f"Bearer {token}"}
    url = region.urls["BW"] + "/api/v1/certificates"
    assert httpx.get(url, headers=headers).status_code == 200
    assert nw.pool.run(lambda cur: access.revoke_tokens(cur, "old-erp")) == 1
    assert httpx.get(url, headers=headers).status_code == 401


def test_not_a_json_array_is_a_400_problem(region: LiveRegion) -> None:
    with api(region) as client:
        answer = client.post(
            "/api/v1/operations", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400 and "not JSON" in answer.json()["detail"]
        assert client.post("/api/v1/operations", json={"op": "issue"}).status_code == 400
        form = client.post("/api/v1/operations", data={"a": "b"})
        assert form.status_code == 415
        [element] = client.post("/api/v1/operations", json=[42]).json()["results"]
        assert (element["status"], element["reason"]) == ("refused", "SCHEMA_INVALID")
        assert "JSON object" in element["sentence"]


def test_the_openapi_document_is_valid_openapi_3_1(region: LiveRegion) -> None:
    spec = httpx.get(region.urls["BW"] + "/api/v1/openapi.json").json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)
    assert {
        "/api/v1/operations",
        "/api/v1/certificates",
        "/api/v1/certificates/{certificate_id}",
        "/api/v1/certificates/{certificate_id}/pdf",
        "/api/v1/shipments/expected",
    } <= set(spec["paths"])


def test_the_api_lists_and_shows_certificates(region: LiveRegion) -> None:
    [result] = post(region, [{"op": "issue", "certificate": certificate()}]).json()["results"]
    cid = result["certificate_id"]
    with api(region, "auditor") as client:
        listed = client.get("/api/v1/certificates", params={"q": cid}).json()
        assert [c["certificate_id"] for c in listed["certificates"]] == [cid]
        one = client.get(f"/api/v1/certificates/{cid}").json()
        assert one["body"]["number_of_parcels"] == 2
        assert one["verify_url"] == f"http://127.0.0.1:8400/verify/{cid}"
        assert client.get("/api/v1/certificates/XS-BW-1999-000001-0").status_code == 404


def test_the_pdf_carries_the_annex_i_elements_and_a_qr_code_that_decodes_to_the_verify_url(
    region: LiveRegion, tmp_path: Path
) -> None:
    for tool in ("pdftoppm", "zbarimg", "pdftotext"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/ensure-services"
    [result] = post(region, [{"op": "issue", "certificate": certificate()}]).json()["results"]
    cid = result["certificate_id"]
    with api(region, "auditor") as client:
        answer = client.get(f"/api/v1/certificates/{cid}/pdf")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/pdf"
    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(answer.content)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "150", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    [png] = tmp_path.glob("page*.png")
    decoded = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(png)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert decoded == f"http://127.0.0.1:8400/verify/{cid}"
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for element in (
        "KIMBERLEY PROCESS CERTIFICATE",
        "Kimberley Process Certification Scheme",
        cid,
        "Country of origin",
        "Date of issue",
        "Date of expiry",
        "Issuing authority",
        "Ministry of Minerals and Energy — Diamond Hub",
        "Exporter",
        "Okavango Diamond Company",
        "Importer",
        "Namdia Trading",
        "201.00 ct",
        "USD 38400.00",
        "Number of parcels",
        "7102.31",
        "Validation by the exporting authority",
        "Registry state",
    ):
        assert element in text, element


def test_a_script_and_a_100_kb_string_are_stored_as_given_and_served_escaped(
    region: LiveRegion,
) -> None:
    probe = "<script>alert('xss')</script>"
    huge = "Z" * 100_000
    cert = certificate()
    cert["exporter"]["name"] = probe
    cert["importer"]["address"] = huge
    [result] = post(region, [{"op": "issue", "certificate": cert}]).json()["results"]
    assert result["status"] == "ok", result
    stored = region.query(
        "BW",
        "SELECT body -> 'exporter' ->> 'name', length(body -> 'importer' "
        "->> 'address') FROM certificates WHERE certificate_id = %s",
        result["certificate_id"],
    )
    assert stored == [(probe, 100_000)]
    with httpx.Client(base_url=region.urls["BW"]) as client:
        page = client.get("/login").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        client.post(
            "/login",
            data={
                "username": "audrey",
                "password": "correct horse battery",
                "csrf_token": token,
                "next": "/",
            },
        )
        shown = client.get(f"/certificates/{result['certificate_id']}").text
    assert probe not in shown
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in shown
    assert huge in shown


def test_an_operations_line_is_the_same_json_as_kpx_node_submit_reads(region: LiveRegion) -> None:
    # The API and the CLI share Node.submit: a line refused by one is refused alike by the other.
    line = json.dumps({"op": "void", "certificate_id": "XS-BW-2026-000999-0", "reason": "x"})
    [api_result] = post(region, [json.loads(line)]).json()["results"]
    assert api_result["reason"] in {"UNKNOWN_CERTIFICATE", "BAD_CERTIFICATE_NUMBER"}


def test_after_signing_out_a_copied_session_cookie_no_longer_works(region: LiveRegion) -> None:
    base = region.urls["BW"]
    with httpx.Client(base_url=base) as client:
        token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
        client.post(
            "/login",
            data={
                "username": "audrey",
                "password": "correct horse battery",
                "csrf_token": token,
                "next": "/",
            },
        )
        stolen = dict(client.cookies)
        assert client.get("/certificates").status_code == 200
        page = client.get("/certificates").text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/logout", data={"csrf_token": token})
    with httpx.Client(base_url=base, cookies=stolen) as replay:
        answer = replay.get("/certificates")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
