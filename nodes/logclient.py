"""The registry's public log over HTTP, C2SP ``tlog-tiles``: what ``kpx node audit`` reads.

A member state reaches the regional body's portal, not its database: ``<base>/log/checkpoint``,
hash tiles ``<base>/log/tile/<L>/<N>[.p/<W>]`` and entry bundles
``<base>/log/tile/entries/<N>[.p/<W>]`` (served by exchange/registry/web/logroutes.py, or by
any mirror of them). Nothing fetched here is trusted: the checkpoint is opened with the log
key the node was given, and every hash read from a tile goes into a proof the node computes
itself (:mod:`exchange.tlog.proof`) and checks against that checkpoint's signed root, so a
tile that lies makes the proof fail.

Tiles are fetched at their width in the tree of the size asked (the checkpoint's), so a
partial tile at the right edge is the one that tree had (or, once gone, the start of the full
one), and kept for the life of the client (one audit), the least recently used out first.
Transient HTTP failures (no connection, a timeout, 429 or 5xx) are retried a few times with
jittered backoff, then raise LogUnavailable (exit 3); a 404 raises NotFound and an answer of
the wrong size MalformedNote, which the audit reports as a failed check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Self

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from exchange.errors import LogUnavailable, MalformedNote, NotFound
from exchange.tlog import tile
from exchange.tlog.tile import Tile
from exchange.tlog.tree import HashReader

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_CHECKPOINT_LIMIT = 1 << 16  # a checkpoint with its cosignatures is a few hundred bytes
_ENTRY_LIMIT = 2 + 0xFFFF  # one bundle record at most
_TILES_KEPT = 1024  # the right edge's and the upper levels' tiles stay: proofs share them


def _byte_length(wanted: Tile) -> int:
    """The size in bytes of a hash tile."""
    return wanted.width * tile.HASH


class LogClient:
    """A :class:`nodes.audit.LogSource` over a log's tiles at ``base_url`` (its ``/log`` under it).

    ``timeout`` bounds each connect and each read (seconds); ``attempts`` the tries of one
    request before LogUnavailable.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        attempts: int = 4,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.attempts = attempts
        # Redirects followed (a portal moved to https, a mirror behind a CDN): whoever answers,
        # nothing it serves is trusted.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True)
        # Immutable once fetched for a tree of a given size: kept, least recently used first
        # out beyond _TILES_KEPT (a level-0 tile and its subtrees take about 36 kB).
        self._tiles: OrderedDict[Tile, list[list[bytes]]] = OrderedDict()
        # The last bundle read only: the audit reads its events in leaf order, and a bundle
        # can weigh megabytes.
        self._bundle_kept: tuple[Tile, list[bytes]] | None = None
        self.tiles_fetched = 0
        self.bundles_fetched = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    # --- what the audit asks ---------------------------------------------------------------

    def latest_checkpoint_note(self) -> str:
        """The latest checkpoint note as served (cosignatures may follow); not yet verified."""
        body = self._get("log/checkpoint", _CHECKPOINT_LIMIT)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote(f"{self.base}/log/checkpoint is not UTF-8 text") from exc

    def hashes(self, size: int) -> HashReader:
        """A HashReader over the stored hashes of the tree of ``size`` leaves, from its tiles."""

        def read(indexes: Sequence[int]) -> list[bytes]:
            out = []
            for index in indexes:
                wanted, height, position = tile.tile_for_hash(index, size)
                out.append(self._tile(wanted)[height][position])
            return out

        return read

    def entry(self, index: int, size: int) -> bytes:
        """The bytes of leaf ``index`` in the tree of ``size``, from its entry bundle."""
        if not 0 <= index < size:
            raise NotFound(f"leaf {index} is outside the log's {size} leaves")
        bundle = tile.tile_for_size(0, index // tile.FULL, size)
        if self._bundle_kept is None or self._bundle_kept[0] != bundle:
            self._bundle_kept = (bundle, self._bundle(bundle))
        return self._bundle_kept[1][index % tile.FULL]

    def entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """Every entry of the tree of ``size``, in order, one bundle fetched at a time (not
        kept: a scan of a large log must not hold it all)."""
        for n in range((size + tile.FULL - 1) // tile.FULL):
            bundle = tile.tile_for_size(0, n, size)
            for offset, data in enumerate(self._bundle(bundle)):
                yield n * tile.FULL + offset, data

    # --- HTTP ------------------------------------------------------------------------------

    def _tile(self, wanted: Tile) -> list[list[bytes]]:
        """The tile's hashes and the subtrees they complete (tile.tile_levels), fetched once."""
        if wanted in self._tiles:
            self._tiles.move_to_end(wanted)
        else:
            try:
                data = self._hash_tile(wanted)
            except NotFound:
                if wanted.width == tile.FULL:
                    raise
                # C2SP tlog-tiles: a partial tile may be gone once the log filled it; the
                # full tile begins with the same hashes (a tile only ever grows).
                data = self._hash_tile(replace(wanted, width=tile.FULL))[: _byte_length(wanted)]
            self._tiles[wanted] = tile.tile_levels(data)
            if len(self._tiles) > _TILES_KEPT:
                self._tiles.popitem(last=False)
        return self._tiles[wanted]

    def _hash_tile(self, wanted: Tile) -> bytes:
        expected = _byte_length(wanted)
        data = self._get(f"log/{wanted.path()}", expected)
        if len(data) != expected:
            raise MalformedNote(f"tile {wanted.path()} has {len(data)} bytes, not {expected}")
        self.tiles_fetched += 1
        return data

    def _bundle(self, bundle: Tile) -> list[bytes]:
        try:
            return self._entry_bundle(bundle)
        except NotFound:
            if bundle.width == tile.FULL:
                raise
            return self._entry_bundle(replace(bundle, width=tile.FULL))[: bundle.width]

    def _entry_bundle(self, bundle: Tile) -> list[bytes]:
        data = self._get(f"log/{bundle.entries_path()}", bundle.width * _ENTRY_LIMIT)
        self.bundles_fetched += 1
        try:
            return tile.parse_entry_bundle(data, bundle.width)
        except MalformedNote as exc:
            raise MalformedNote(f"{bundle.entries_path()}: {exc}") from exc

    def _get(self, path: str, limit: int) -> bytes:
        retrying = Retrying(
            retry=retry_if_exception_type(LogUnavailable),
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=0.25, max=4.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._get_once(f"{self.base}/{path}", limit)
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _get_once(self, url: str, limit: int) -> bytes:
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code in _TRANSIENT_STATUS:
                    raise LogUnavailable(f"GET {url}: HTTP {response.status_code}")
                if response.status_code == 404:
                    raise NotFound(f"GET {url}: HTTP 404 (the log does not serve it)")
                if response.status_code != 200:
                    raise MalformedNote(f"GET {url}: HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:  # a hostile server must not fill the auditor's memory
                        raise MalformedNote(f"GET {url}: more than {limit} bytes")
                return bytes(body)
        except httpx.TransportError as exc:  # connect, read or write failure, timeout
            raise LogUnavailable(f"GET {url}: {type(exc).__name__}: {exc}") from exc
