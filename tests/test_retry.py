"""The reconnect backoff counts one outage's failures, not the process's.

Before, the backoff grew with every failure since the service started: after the few outages
of a fault suite (a cut link, a broker restart) every later reconnect of every relay and
consumer waited a random 0-15 s, at every hop of the pipeline, however long the connection
had worked in between.
"""

from __future__ import annotations

import logging
import threading

import pytest

from exchange.adapters.retry import Backoff, until_stopped
from exchange.errors import DatabaseUnavailable


class Clock:
    """Time that moves only when told (the backoff's arithmetic, without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def highest(low: float, high: float) -> float:
    """The jitter's worst case: the wait is its ceiling."""
    return high


def fail_quickly(backoff: Backoff, clock: Clock, times: int) -> list[float]:
    """``times`` attempts that each fail at once; the waits chosen after them."""
    waits = []
    for _ in range(times):
        wait = backoff()
        waits.append(wait)
        clock.now += wait + 0.01  # the wait, then an attempt that fails at once
    return waits


def test_waits_double_from_half_a_second_up_to_fifteen() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, jitter=highest)
    assert fail_quickly(backoff, clock, 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]


def test_an_attempt_that_worked_for_a_while_starts_the_next_outage_from_the_first_wait() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock, jitter=highest)
    fail_quickly(backoff, clock, 8)  # earlier outages: the ceiling is at its maximum
    clock.now += 600.0  # then ten minutes connected and working
    assert fail_quickly(backoff, clock, 3) == [0.5, 1.0, 2.0]


def test_an_attempt_that_fails_soon_after_connecting_keeps_backing_off() -> None:
    """A connection that dies within seconds (a flapping link) is no recovery."""
    clock = Clock()
    backoff = Backoff(clock=clock, jitter=highest)
    fail_quickly(backoff, clock, 4)
    clock.now += 5.0  # connected, then lost again after five seconds
    assert fail_quickly(backoff, clock, 2) == [8.0, 15.0]


def test_the_jitter_stays_within_the_ceiling() -> None:
    backoff = Backoff()
    waits = [backoff() for _ in range(200)]
    assert all(0.0 <= w <= 15.0 for w in waits)
    assert waits[0] <= 0.5


def test_until_stopped_retries_transient_failures_with_that_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("kpx-test-backoff")
    stop = threading.Event()
    attempts = 0
    with caplog.at_level(logging.WARNING, logger=log.name):
        for attempt in until_stopped(stop, log):
            with attempt:
                attempts += 1
                if attempts < 3:
                    raise DatabaseUnavailable("connecting to db: not yet accepting connections")
    assert attempts == 3
    lines = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert [line.rsplit("(", 1)[1] for line in lines] == [
        "attempt 2 of this outage)",
        "attempt 3 of this outage)",
    ]
