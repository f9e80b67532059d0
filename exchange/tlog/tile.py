"""C2SP ``tlog-tiles``: tile paths and which stored hashes a tile holds (height 8).

Tile ``(level L, index N, width W)`` is the W consecutive hashes, from the ``N * 256``-th on,
of the complete subtrees of height ``8 * L``; with the stored-hash index of :mod:`.tree`
each is one stored hash, so serving a tile is one read. A client reads the stored hashes of
the heights in between from the tile below them (:func:`tile_for_hash`, :func:`tile_levels`),
as golang/mod's ``tlog.TileHashReader`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.errors import MalformedNote
from exchange.tlog.tree import HASH_SIZE, node_hash, split_stored_hash_index, stored_hash_index

HEIGHT = 8
FULL = 1 << HEIGHT  # 256 hashes, 8192 bytes
HASH = HASH_SIZE


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: level, index within the level, width (1–256)."""

    level: int
    index: int
    width: int

    def __post_init__(self) -> None:
        if not (0 <= self.level <= 63 and self.index >= 0 and 1 <= self.width <= FULL):
            raise MalformedNote(f"no such tile: {self}")

    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{_encode_index(self.index)}{self._partial()}"

    def entries_path(self) -> str:
        """The level-0 entry bundle's path, ``tile/entries/<N>[.p/<W>]``."""
        return f"tile/entries/{_encode_index(self.index)}{self._partial()}"

    def _partial(self) -> str:
        return "" if self.width == FULL else f".p/{self.width}"

    def hash_indexes(self) -> list[int]:
        """The stored-hash indexes of the tile's hashes, in order."""
        start = self.index << HEIGHT
        level = self.level * HEIGHT
        return [stored_hash_index(level, n) for n in range(start, start + self.width)]


def _encode_index(n: int) -> str:
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n > 0:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_for_size(level: int, index: int, size: int) -> Tile:
    """The tile ``(level, index)`` as it stands in a tree of ``size`` leaves: full, or the
    partial tile at the right edge; raises MalformedNote if it does not exist yet."""
    span = size >> (HEIGHT * level)  # complete subtrees at that height
    width = min(FULL, span - (index << HEIGHT))
    if width <= 0:
        raise MalformedNote(f"tile {level}/{index} does not exist in a tree of size {size}")
    return Tile(level, index, width)


def parse_path(path: str) -> tuple[int | None, int, int]:
    """``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/…`` → (level or None for entries, N, W)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise MalformedNote(f"not a tile path: {path!r}")
    width = FULL
    if len(parts) >= 4 and parts[-2].endswith(".p"):
        width = _number(parts[-1], path)
        parts = [*parts[:-2], parts[-2][:-2]]
    level = None if parts[1] == "entries" else _number(parts[1], path)
    *heads, last = parts[2:]
    widths_ok = all(len(p) == 3 + p.startswith("x") for p in parts[2:])
    if not widths_ok or not all(h.startswith("x") for h in heads) or last.startswith("x"):
        raise MalformedNote(f"not a tile index: {path!r}")
    n = 0
    for group in [h[1:] for h in heads] + [last]:
        n = n * 1000 + _number(group, path, padded=True)
    return level, n, width


def _number(text: str, path: str, *, padded: bool = False) -> int:
    if not text.isascii() or not text.isdigit() or (not padded and text != str(int(text))):
        raise MalformedNote(f"not a tile path: {path!r}")
    return int(text)


def entry_bundle(entries: list[bytes]) -> bytes:
    """Entries as big-endian uint16 length-prefixed records."""
    out = bytearray()
    for data in entries:
        if len(data) > 0xFFFF:
            raise MalformedNote(f"an entry of {len(data)} bytes does not fit a bundle")
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def parse_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """The entries of a bundle that must hold exactly ``width``; raises MalformedNote."""
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise MalformedNote(f"entry bundle cut inside the length of entry {len(entries)}")
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        if end > len(data):
            raise MalformedNote(f"entry bundle cut inside entry {len(entries)}")
        entries.append(data[at + 2 : end])
        at = end
    if len(entries) != width:
        raise MalformedNote(f"entry bundle holds {len(entries)} entries, not {width}")
    return entries


def tile_for_hash(index: int, size: int) -> tuple[Tile, int, int]:
    """Where stored hash ``index`` is read from in a tree of ``size`` leaves: the tile as it
    stands in that tree, and the ``(height, position)`` of the hash in :func:`tile_levels`
    of the tile's data.

    A stored hash of height ``8L + r`` is the root of ``2**r`` consecutive hashes of the tile
    at level L; raises MalformedNote if the tree of ``size`` has not stored that hash yet.
    """
    level, n = split_stored_hash_index(index)
    tile_level, height = divmod(level, HEIGHT)
    first = n << height  # its first hash of height 8L
    wanted = tile_for_size(tile_level, first >> HEIGHT, size)
    start = first - (wanted.index << HEIGHT)
    if start + (1 << height) > wanted.width:
        raise MalformedNote(f"stored hash {index} is not in a tree of size {size}")
    return wanted, height, start >> height


def tile_levels(data: bytes) -> list[list[bytes]]:
    """A tile's hashes (level 0) and the subtrees they complete: level r's j-th hash is the
    subtree hash of the tile's hashes ``[j * 2**r, (j + 1) * 2**r)``. Computed once per tile
    (at most 255 hashes), so each stored hash read from it afterwards costs nothing."""
    levels = [[data[i : i + HASH] for i in range(0, len(data), HASH)]]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[j], below[j + 1]) for j in range(0, len(below) - 1, 2)])
    return levels
