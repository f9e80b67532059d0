"""Discrepancies found against those seeded: exact key matching, precision and recall. Pure.

A found discrepancy (an item of ``kpx registry discrepancies --json``) matches a seeded one
when kind and certificate agree, or — for findings about no certificate — kind, participants
(in order) and period agree. Precision = matched found / found, recall = matched seeded /
seeded; both are 1.0 when there is nothing to find and nothing was found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .traffic import Expected, key_of


@dataclass(frozen=True, slots=True)
class KindScore:
    """One kind's figures."""

    kind: str
    seeded: int
    found: int
    matched_found: int
    matched_seeded: int


@dataclass(frozen=True, slots=True)
class Score:
    """The whole comparison, with the items that did not match."""

    kinds: tuple[KindScore, ...]
    false_positives: tuple[Mapping[str, Any], ...]
    missed: tuple[Expected, ...]

    @property
    def precision(self) -> float:
        found = sum(k.found for k in self.kinds)
        return 1.0 if found == 0 else sum(k.matched_found for k in self.kinds) / found

    @property
    def recall(self) -> float:
        seeded = sum(k.seeded for k in self.kinds)
        return 1.0 if seeded == 0 else sum(k.matched_seeded for k in self.kinds) / seeded

    @property
    def perfect(self) -> bool:
        return self.precision == 1.0 and self.recall == 1.0


def found_key(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """The match key of a found discrepancy."""
    return key_of(
        str(item["kind"]),
        item.get("certificate_id"),
        [str(p) for p in item.get("participants") or ()],
        item.get("period"),
    )


def score(
    expected: Sequence[Expected], found: Iterable[Mapping[str, Any]], kinds: Sequence[str]
) -> Score:
    """Compare; ``kinds`` orders the table (kinds found but not listed are appended)."""
    found = list(found)
    seeded_keys = {e.key for e in expected}
    found_keys = {found_key(f) for f in found}
    fps = tuple(f for f in found if found_key(f) not in seeded_keys)
    missed = tuple(e for e in expected if e.key not in found_keys)
    order = list(kinds) + sorted({str(f["kind"]) for f in found} - set(kinds))
    rows = []
    for kind in order:
        mine = [f for f in found if f["kind"] == kind]
        seeds = [e for e in expected if e.kind == kind]
        rows.append(
            KindScore(
                kind,
                len(seeds),
                len(mine),
                sum(1 for f in mine if found_key(f) in seeded_keys),
                sum(1 for e in seeds if e.key in found_keys),
            )
        )
    return Score(tuple(rows), fps, missed)
