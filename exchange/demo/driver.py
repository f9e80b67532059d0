"""Submitting the plan on schedule: due operations, per node, in small chunks.

The driver is given three callables by the demo's composition root (so this module imports
no node code): ``submit`` applies JSON lines as one node's authority and returns (ok, text)
per line; ``skip_sequence`` makes a node lose one sequence number (the SEQUENCE_GAP seed);
``is_voided`` asks the registry whether a certificate is voided yet (the VOIDED_BUT_IMPORTED
seed must reach the registry after the void, or the registry would refuse the void).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .traffic import Op, Plan

Submit = Callable[[str, list[str]], list[tuple[bool, str]]]


@dataclass
class Driver:
    """Walks the plan's operations as the clock advances."""

    plan: Plan
    submit: Submit
    skip_sequence: Callable[[str], None]
    is_voided: Callable[[str], bool]
    next_index: int = 0
    deferred: list[Op] = field(default_factory=list)
    done_ops: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.next_index >= len(self.plan.ops) and not self.deferred

    def step(self, elapsed: float) -> int:
        """Submit every operation due by ``elapsed`` seconds; return how many were submitted."""
        due: list[Op] = []
        still: list[Op] = []
        for op in self.deferred:
            (due if op.after_voided is None or self.is_voided(op.after_voided) else still).append(
                op
            )
        self.deferred = still
        ops = self.plan.ops
        while self.next_index < len(ops) and ops[self.next_index].at <= elapsed:
            op = ops[self.next_index]
            self.next_index += 1
            if op.after_voided is not None and not self.is_voided(op.after_voided):
                self.deferred.append(op)
            else:
                due.append(op)
        for node, chunk in _by_node(due).items():
            self._submit(node, chunk)
        return len(due)

    def _submit(self, node: str, chunk: list[Op]) -> None:
        start = 0
        for i, op in enumerate(chunk):
            if op.skip_sequence:  # everything before it first, then lose a number
                self._apply(node, chunk[start:i])
                self.skip_sequence(node)
                start = i
        self._apply(node, chunk[start:])

    def _apply(self, node: str, ops: list[Op]) -> None:
        if not ops:
            return
        results = self.submit(node, [op.line() for op in ops])
        for op, (ok, text) in zip(ops, results, strict=True):
            if ok:
                self.done_ops[op.body["op"]] += 1
            else:
                self.refused.append(f"{node} {op.label} {op.body['op']}: {text}")


def _by_node(ops: list[Op]) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = {}
    for op in ops:
        out.setdefault(op.node, []).append(op)
    return out
