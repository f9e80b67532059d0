"""A small TCP proxy that injects network faults between a client and a server.

``FaultProxy(upstream_port)`` listens on a free local port and relays bytes both ways. Faults:

- :meth:`FaultProxy.cut` resets every open connection at once (the client sees its socket
  die mid-stream, as when a link drops), while new connections are still accepted;
- :meth:`FaultProxy.refuse` makes it drop new connections as soon as they are accepted (the
  link stays down) until :meth:`FaultProxy.accept` is called.

One accept thread and two pump threads per connection; everything stops in :meth:`close`.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress
from types import TracebackType
from typing import Self

_CHUNK = 65536


class FaultProxy:
    """A TCP relay to ``127.0.0.1:upstream_port`` whose connections can be cut on demand."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self.accepted = 0
        self.cuts = 0
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- faults --

    def cut(self) -> int:
        """Reset every open connection; return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _reset(sock)
        self.cuts += len(pairs)
        return len(pairs)

    def refuse(self) -> None:
        """Drop every new connection until :meth:`accept` (the link is down)."""
        self._refusing.set()

    def accept(self) -> None:
        """Relay new connections again."""
        self._refusing.clear()

    @property
    def open_connections(self) -> int:
        """How many client connections are being relayed now."""
        with self._lock:
            return len(self._pairs)

    # -- lifecycle --

    def close(self) -> None:
        """Stop accepting, cut everything, join the accept thread (bounded)."""
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- relaying --

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, (client, upstream)), daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for sock in pair:
                _reset(sock)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close sends a RST, the abrupt end a dropped link looks like to the peer.
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
