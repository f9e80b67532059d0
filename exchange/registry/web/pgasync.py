"""psycopg2's asynchronous connections driven by the running event loop, on their sockets.

Shared by the verification lookups (lookups.py) and the cache's listener (verifycache.py): a
non-blocking connection takes no worker thread; the loop wakes its waiter when the socket is
ready, and ``poll()`` does the rest.
"""

from __future__ import annotations

import asyncio

import psycopg2
import psycopg2.extensions

from exchange.adapters.postgres import Connection

_OK, _READ, _WRITE = (
    psycopg2.extensions.POLL_OK,
    psycopg2.extensions.POLL_READ,
    psycopg2.extensions.POLL_WRITE,
)


async def ready(conn: Connection) -> None:
    """Drive ``conn``'s pending operation to its end, waiting on its socket in the loop."""
    while (state := conn.poll()) != _OK:
        if state == _READ:
            await readable(conn)
        elif state == _WRITE:
            await _wait(conn, writing=True)
        else:  # POLL_ERROR is raised by poll() itself; anything else is psycopg2's bug
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


async def readable(conn: Connection) -> None:
    """Until ``conn``'s socket has something to read (an answer, a notification, its end)."""
    await _wait(conn, writing=False)


async def _wait(conn: Connection, *, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    if writing:
        watch, unwatch = loop.add_writer, loop.remove_writer
    else:
        watch, unwatch = loop.add_reader, loop.remove_reader
    fd = conn.fileno()
    woken: asyncio.Future[None] = loop.create_future()
    watch(fd, _wake, woken)
    try:
        await woken
    finally:
        unwatch(fd)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # the socket may be seen ready again before the waiter runs
        woken.set_result(None)
