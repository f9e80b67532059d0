"""request_id (DESIGN §9): reading it, and answering a repeat with its first answer.

An operation whose request_id the node has already applied is answered, never applied
again; the store keeps the applied ones (``nodes/store.py``: ``applied_requests``), and
``Node`` locks their ids for the length of its transaction. Only applied operations are
remembered: a refused one may be corrected and sent again under the same id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from exchange.errors import Refusal

if TYPE_CHECKING:
    from nodes.operations import Result

SCHEMA_INVALID = "SCHEMA_INVALID"
MAX_REQUEST_ID = 100  # characters (DESIGN §9)


def request_id(op: Mapping[str, Any]) -> str | None:
    """The operation's request_id, None when it has none; Refusal when it is malformed."""
    rid = op.get("request_id")
    if rid is None:
        return None
    if not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID:
        shown = repr(rid) if len(repr(rid)) <= 40 else f"{repr(rid)[:40]}…"
        raise Refusal(
            SCHEMA_INVALID,
            f"request_id must be a string of 1 to {MAX_REQUEST_ID} characters, got {shown}",
        )
    return rid


def answer_repeats(repeats: dict[int, int], results: dict[int, Result]) -> None:
    """A request_id repeated within one submission gets the answer of its first line."""
    for number, earlier in repeats.items():
        first = results[earlier]
        results[number] = replace(first, line=number, already=first.ok)


def applied(
    parsed: list[tuple[int, Mapping[str, Any], str | None]], results: dict[int, Result]
) -> list[tuple[str, str, str]]:
    """(request_id, op, subject) of the operations applied now; a refusal is not remembered,
    so a corrected retry under the same id is applied."""
    return [
        (rid, str(op.get("op")), results[number].subject)
        for number, op, rid in parsed
        if rid is not None and results[number].ok and not results[number].already
    ]
