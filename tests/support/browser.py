"""Real-browser tests: Playwright for Python driving Debian's Chromium, and a live server.

Fixtures (a test module asks for them with ``pytest_plugins = ["support.browser"]``)::

    browser     session   one headless Chromium (/usr/bin/chromium, never a download)
    page        function  a fresh context and page (own cookies), closed after the test
    new_page    function  factory: new_page(locale="en-GB") -> a page in a context of its own
                          (a second user, another language); all closed after the test
    live_server session   the ``serve`` function below, for module-scoped server fixtures

``serve(app)`` runs an ASGI app under uvicorn on a free loopback port in a thread and yields
its base URL; it returns once the server answers and stops it (draining) on exit. Importing
this module into a test module is not needed (and makes pytest warn): ask for the fixtures.
A missing Chromium is an error with the command to install it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

CHROMIUM = os.environ.get("KPX_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "install it with scripts/ensure-services (apt-get install -y chromium)"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium is missing at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(locale="en-GB")
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def make(locale: str = "en-GB") -> Any:
        context = browser.new_context(locale=locale, extra_http_headers={"Accept-Language": locale})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def live_server() -> Callable[..., Any]:
    return serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", **options: Any) -> Iterator[str]:
    """Serve ``app`` in a thread; yield ``http://host:port``; stop the server on exit.

    ``options`` go to ``uvicorn.Config`` (``ssl_certfile`` and ``ssl_keyfile`` give https).
    """
    port = free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    ready = threading.Event()
    while not ready.wait(0.02):  # uvicorn sets .started once the socket listens
        if server.started:
            ready.set()
        elif not thread.is_alive():
            raise RuntimeError(f"the test server on port {port} did not start")
    try:
        scheme = "https" if options.get("ssl_certfile") else "http"
        yield f"{scheme}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
