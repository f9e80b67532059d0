"""The registry's log over HTTP in the C2SP ``tlog-tiles`` layout, under ``/log`` (DESIGN §12).

``/log/checkpoint`` is the latest signed checkpoint with the cosignatures the registry holds
(never cached for long: it moves); ``/log/tile/<L>/<N>[.p/<W>]`` a hash tile and
``/log/tile/entries/<N>[.p/<W>]`` an entry bundle (a full tile never changes, so it is cached
for a year; a partial one only briefly). The reading is exchange/registry/log.py's; these
routes only map paths and errors, on the bounded public pool.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from exchange.errors import MalformedNote, NotFound
from exchange.registry import log
from exchange.registry.web.portal import Portal
from exchange.tlog import tile

_IMMUTABLE = "public, max-age=31536000, immutable"
_MOVING = "public, max-age=5"


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _checkpoint_note(portal: Portal) -> str:
    with portal.public.connection() as conn:
        return log.latest_checkpoint_note(conn)


def _tile_bytes(portal: Portal, level: int | None, index: int, width: int) -> bytes:
    with portal.public.connection() as conn:
        if level is None:
            return log.read_entries(conn, index, width)
        return log.read_tile(conn, level, index, width)


async def checkpoint(request: Request) -> Response:
    try:
        text = await run_in_threadpool(_checkpoint_note, _portal(request))
    except NotFound as exc:
        return PlainTextResponse(f"{exc}\n", 404)
    return PlainTextResponse(text, headers={"cache-control": _MOVING})


async def tile_route(request: Request) -> Response:
    path = "tile/" + request.path_params["path"]
    try:
        level, index, width = tile.parse_path(path)
        body = await run_in_threadpool(_tile_bytes, _portal(request), level, index, width)
    except (MalformedNote, NotFound) as exc:
        return PlainTextResponse(f"{exc}\n", 404)
    cache = _IMMUTABLE if width == tile.FULL else _MOVING
    return Response(body, media_type="application/octet-stream", headers={"cache-control": cache})


ROUTES = [
    Route("/log/checkpoint", checkpoint),
    Route("/log/tile/{path:path}", tile_route),
]
