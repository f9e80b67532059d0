"""The audit's tile client (nodes/logclient.py) against a static C2SP tlog-tiles server.

The server, a tiny Starlette app under uvicorn on loopback, serves a tree of 600 leaves held
in memory as a static mirror may: a partial tile is deleted once the log fills it (C2SP
tlog-tiles), so only full tiles and partial tiles not yet full are there. A client auditing
an older checkpoint of 300 leaves reads the tiles that tree had — from the full tiles where
its partial ones are gone — and the proofs it computes from them verify against its root.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from support.browser import serve

from exchange.errors import MalformedNote
from exchange.tlog import proof, tile, tree
from nodes.logclient import LogClient

SIZE, OLD = 600, 300


def _entry(n: int) -> bytes:
    return b"envelope %d " % n + bytes(n % 7)


@pytest.fixture(scope="module")
def mirror() -> Iterator[tuple[str, tree.MemoryHashes, list[str]]]:
    log = tree.MemoryHashes()
    for n in range(SIZE):
        log.append(_entry(n))
    asked: list[str] = []

    def serve_tile(request: Request) -> Response:
        path = "tile/" + request.path_params["path"]
        asked.append(path)
        try:
            level, index, width = tile.parse_path(path)
            current = tile.tile_for_size(level or 0, index, SIZE)
        except MalformedNote:
            return PlainTextResponse("no such tile", 404)
        if width > current.width or (width < tile.FULL == current.width):  # not yet, or gone
            return PlainTextResponse("no such tile", 404)
        if level is None:
            start = index * tile.FULL
            return Response(tile.entry_bundle([_entry(n) for n in range(start, start + width)]))
        return Response(b"".join(log.read(tile.Tile(level, index, width).hash_indexes())))

    def moved(request: Request) -> Response:  # the old address of the mirror
        return RedirectResponse(f"/log/tile/{request.path_params['path']}", 301)

    routes = [Route("/log/tile/{path:path}", serve_tile), Route("/old/log/tile/{path:path}", moved)]
    app = Starlette(routes=routes)
    with serve(app) as url:
        yield url, log, asked


def test_an_older_tree_is_read_from_the_full_tiles_once_its_partial_ones_are_gone(
    mirror: tuple[str, tree.MemoryHashes, list[str]],
) -> None:
    url, log, asked = mirror
    old_root = tree.tree_hash(OLD, log.read)
    with LogClient(url) as client:
        read = client.hashes(OLD)
        for index in (0, 255, 256, OLD - 1):
            path = proof.prove_inclusion(index, OLD, read)
            proof.verify_inclusion(index, OLD, tree.leaf_hash(_entry(index)), path, old_root)
            assert client.entry(index, OLD) == _entry(index)
        consistency = proof.prove_consistency(OLD, SIZE, client.hashes(SIZE))
        proof.verify_consistency(OLD, SIZE, old_root, log.root(), consistency)
        assert [n for n, _ in client.entries(OLD)] == list(range(OLD))
    assert "tile/0/001.p/44" in asked and "tile/0/001" in asked  # refused, then the full one
    assert "tile/entries/001.p/44" in asked and "tile/entries/001" in asked


def test_each_tile_is_fetched_once_per_client(
    mirror: tuple[str, tree.MemoryHashes, list[str]],
) -> None:
    url, _, _ = mirror
    with LogClient(url) as client:
        read = client.hashes(SIZE)
        for index in range(0, SIZE, 7):
            proof.prove_inclusion(index, SIZE, read)
        assert client.tiles_fetched == 4  # 0/000, 0/001, 0/002.p/88 and 1/000.p/2


def test_a_mirror_that_moved_is_followed(mirror: tuple[str, tree.MemoryHashes, list[str]]) -> None:
    url, log, _ = mirror
    with LogClient(f"{url}/old") as client:
        path = proof.prove_inclusion(7, SIZE, client.hashes(SIZE))
        proof.verify_inclusion(7, SIZE, tree.leaf_hash(_entry(7)), path, log.root())
