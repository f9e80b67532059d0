"""The shared web foundation (exchange/web): security settings, sessions, i18n, problems.

A tiny app built with ``build_app`` is served by a real uvicorn on loopback; requests go over
real sockets (httpx, and a raw socket for the 413 test).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from exchange.web import auth, i18n, sessions
from exchange.web.app import build_app
from exchange.web.forms import checked_form
from exchange.web.security import (
    CONTENT_SECURITY_POLICY,
    RateLimiter,
    WebSecurity,
    hash_password,
    token_digest,
    verify_password,
)
from exchange.web.templating import render

pytest_plugins = ["support.browser"]  # the browser fixtures

SECRET = b"k" * 32
HASH = hash_password("correct horse")


async def home(request: Request) -> Response:
    return render(request, "login.html", {"error": request.query_params.get("e", "")})


async def post_form(request: Request) -> Response:
    form = await checked_form(request)
    return PlainTextResponse(f"got {form.get('x')}")


async def login(request: Request) -> Response:
    form = await checked_form(request)
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    stored = HASH if username == "ana" else None
    if not auth.check_password(request, username, password, stored):
        return PlainTextResponse("wrong", status_code=401)
    auth.begin_session(request, username=username, role="officer")
    return PlainTextResponse("welcome")


async def api_missing(request: Request) -> Response:
    raise HTTPException(404, "certificate XS-BW-2026-000001-7 is not known here")


async def echo_length(request: Request) -> Response:
    return JSONResponse({"bytes": len(await request.body())})


@pytest.fixture(scope="module")
def base_url(live_server: Any) -> Iterator[str]:
    app = build_app(
        [
            Route("/", home),
            Route("/form", post_form, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/api/v1/missing", api_missing),
            Route("/api/v1/echo", echo_length, methods=["POST"]),
        ],
        title="Test face",
        secret=SECRET,
        security=WebSecurity(max_body_bytes=1024 * 1024, login_attempts=3),
    )
    with live_server(app) as url:
        yield url


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_every_answer_carries_the_security_headers_and_a_csp_without_external_origins(
    base_url: str,
) -> None:
    for answer in (httpx.get(base_url + "/"), httpx.get(base_url + "/api/v1/missing")):
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    assert "http" not in CONTENT_SECURITY_POLICY


def test_the_session_cookie_is_httponly_and_samesite_strict_and_not_secure_over_plain_http(
    base_url: str,
) -> None:
    cookie = httpx.get(base_url + "/").headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie


def test_over_tls_the_session_cookie_is_secure(live_server: Any, tmp_path: Any) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    app = build_app([Route("/", home)], title="TLS", secret=SECRET)
    with live_server(app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        assert url.startswith("https://")
        cookie = httpx.get(url + "/", verify=False).headers["set-cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie


def test_a_session_cookie_is_secure_when_the_request_came_over_tls() -> None:
    middleware = sessions.SessionMiddleware(None, SECRET, WebSecurity())  # type: ignore[arg-type]
    assert "; Secure" in middleware._cookie({"scheme": "https"}, {"user": "ana"})


def test_a_forged_or_expired_session_cookie_is_ignored() -> None:
    value = sessions.sign(SECRET, {"username": "ana"}, now=1000)
    assert sessions.unsign(SECRET, value, max_age=60, now=1010) == {"username": "ana"}
    assert sessions.unsign(SECRET, value, max_age=60, now=2000) == {}
    assert sessions.unsign(b"other" * 8, value, max_age=60, now=1010) == {}
    assert sessions.unsign(SECRET, "garbage", max_age=60) == {}


def test_a_form_without_the_sessions_csrf_token_is_refused_with_403(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        token = csrf_of(client.get("/").text)
        assert client.post("/form", data={"x": "1", "csrf_token": token}).text == "got 1"
        assert client.post("/form", data={"x": "1"}).status_code == 403
        assert client.post("/form", data={"x": "1", "csrf_token": "forged"}).status_code == 403
    # Another browser's token does not work with this one's session.
    with httpx.Client(base_url=base_url) as other:
        other.get("/")
        assert other.post("/form", data={"x": "1", "csrf_token": token}).status_code == 403


def test_api_errors_are_rfc_9457_problem_details(base_url: str) -> None:
    answer = httpx.get(base_url + "/api/v1/missing")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == 404 and body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert "XS-BW-2026-000001-7" in body["detail"]


def test_a_10_mb_body_is_refused_with_413_before_it_is_sent(base_url: str) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\n\r\n"
        )
        # Not one byte of the body was sent: the answer comes from the header alone.
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413")
    assert "application/problem+json" in answer


def test_a_chunked_body_past_the_limit_is_refused_with_413(base_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    answer = httpx.post(base_url + "/api/v1/echo", content=chunks())
    assert answer.status_code == 413
    assert httpx.post(base_url + "/api/v1/echo", content=b"x" * 1000).json() == {"bytes": 1000}


def test_the_language_follows_accept_language_and_can_be_switched(base_url: str) -> None:
    fr = httpx.get(base_url + "/", headers={"Accept-Language": "fr-CD,fr;q=0.9,en;q=0.5"})
    assert "Se connecter" in fr.text and 'lang="fr"' in fr.text
    pt = httpx.get(base_url + "/", headers={"Accept-Language": "pt-AO"})
    assert "Entrar" in pt.text
    with httpx.Client(base_url=base_url, headers={"Accept-Language": "fr"}) as client:
        assert "Entrar" in client.get("/?lang=pt").text
        assert "Entrar" in client.get("/").text  # the choice is kept in the session
    assert "Sign in" in httpx.get(base_url + "/", headers={"Accept-Language": "de"}).text


def test_negotiation_honours_quality_values() -> None:
    assert i18n.negotiate("de, pt;q=0.4, fr;q=0.8") == "fr"
    assert i18n.negotiate("") == "en"
    assert i18n.negotiate("*") == "en"


def test_templates_escape_what_they_show(base_url: str) -> None:
    page = httpx.get(base_url + "/", params={"e": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_login_attempts_are_rate_limited_even_for_the_right_password(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        token = csrf_of(client.get("/").text)
        form = {"username": "ana", "csrf_token": token}
        assert client.post("/login", data=form | {"password": "correct horse"}).status_code == 200
        token = csrf_of(client.get("/").text)  # a login gives the session a new token
        form["csrf_token"] = token
        for _ in range(3):
            assert client.post("/login", data=form | {"password": "nope"}).status_code == 401
        blocked = client.post("/login", data=form | {"password": "correct horse"})
        assert blocked.status_code == 429
        assert "retry-after" in blocked.headers


def test_passwords_are_argon2_hashes_and_tokens_are_stored_as_digests() -> None:
    assert HASH.startswith("$argon2id$")
    assert verify_password(HASH, "correct horse")
    assert not verify_password(HASH, "Correct horse")
    assert not verify_password("not a hash", "x")
    assert len(token_digest("kpx_abc")) == 64


def test_the_rate_limiter_forgets_failures_older_than_its_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    limiter.fail("k")
    limiter.fail("k")
    assert limiter.blocked("k")
    now[0] = 11.0
    assert not limiter.blocked("k")


def test_the_stylesheet_is_served_by_kpx_itself(base_url: str) -> None:
    css = httpx.get(base_url + "/static/kpx.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert len(css.content) < 10_000


def test_chromium_shows_the_base_page_in_french_with_its_stylesheet_and_no_csp_violation(
    new_page: Any, base_url: str
) -> None:
    page = new_page("fr-FR")
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text))
    page.goto(base_url + "/")
    assert page.locator("h1").inner_text() == "Se connecter"
    radius = page.evaluate("getComputedStyle(document.querySelector('button')).borderRadius")
    assert radius == "3px"  # the stylesheet was allowed by the CSP and applied
    assert problems == []


def test_amounts_are_written_as_each_language_writes_them() -> None:
    from exchange.web.templating import _number_formatter

    assert _number_formatter("en")("1234567.5") == "1,234,567.50"
    assert _number_formatter("fr")("1234567.5") == "1\u202f234\u202f567,50"
    assert _number_formatter("en")(None) == ""
    assert _number_formatter("en")("not a number") == "not a number"


def test_a_session_the_app_no_longer_honours_is_emptied_before_any_page(
    live_server: Any,
) -> None:
    honoured: list[bool] = [True]

    async def check(session: dict[str, Any]) -> bool:
        return honoured[0]

    async def whoami(request: Request) -> Response:
        return PlainTextResponse(str(request.scope["session"].get("username")))

    app = build_app(
        [Route("/", home), Route("/login", login, methods=["POST"]), Route("/whoami", whoami)],
        title="t",
        secret=SECRET,
        session_check=check,
    )
    with live_server(app) as url, httpx.Client(base_url=url) as client:
        token = csrf_of(client.get("/").text)
        form = {"username": "ana", "password": "correct horse", "csrf_token": token}
        assert client.post("/login", data=form).text == "welcome"
        assert client.get("/whoami").text == "ana"
        honoured[0] = False
        assert client.get("/whoami").text == "None"
