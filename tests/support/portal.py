"""The registry's portal app served by uvicorn on a thread, for tests that need it over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from exchange.registry.web.app import build
from exchange.registry.web.portal import Portal
from support.broker import free_port


@contextmanager
def served(portal: Portal) -> Iterator[str]:
    """Serve ``portal`` on a free loopback port until the block ends; yields its URL. Its
    lookups and pools are closed after the server stopped."""
    port = free_port()
    config = uvicorn.Config(build(portal, b"k" * 32), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the portal did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        portal.lookups.close()
        portal.public.close()
        portal.work.close()
