"""The one reconnect policy of every long-running kpx loop (relays and consumers).

Only :class:`~exchange.errors.TransientError` is retried — a lost broker or database — with
jittered exponential backoff from about half a second up to 15 s, until the service is told
to stop; a SIGTERM also cuts the current backoff short. Anything else propagates at once.

The backoff counts the failures since the loop last *worked*: an attempt that ran for longer
than the longest backoff had a working connection, so the next outage starts again from the
first, short wait. Counted over the process's life instead, a service that had been through a
few outages waited up to 15 s (7.5 s on average) at every reconnect, at every hop of the
pipeline, however long it had been healthy in between.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_when_event_set

from exchange.errors import TransientError

_FIRST_BACKOFF = 0.5  # seconds: the ceiling of the first wait; it doubles with each failure
_MAX_BACKOFF = 15.0  # seconds: short enough that a restarted broker is found again quickly


class Backoff:
    """Jittered exponential waits (tenacity's ``wait`` protocol), counted from the last
    attempt that ran for at least ``healthy_after`` seconds.

    The n-th failure in a row waits a uniform random time up to ``min(15, 0.5 * 2**(n-1))``
    seconds (full jitter, so a region's services do not reconnect in step).
    """

    def __init__(
        self,
        healthy_after: float = _MAX_BACKOFF,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.healthy_after, self._clock, self._jitter = healthy_after, clock, jitter
        self.failures = 0  # in a row, since the last attempt that worked for a while
        self._attempt_began = clock()

    def ceiling(self) -> float:
        """The longest the wait after the latest failure can be."""
        return min(_MAX_BACKOFF, _FIRST_BACKOFF * 2.0 ** max(self.failures - 1, 0))

    def __call__(self, _state: RetryCallState | None = None) -> float:
        """The wait after the attempt that just failed."""
        now = self._clock()
        if now - self._attempt_began >= self.healthy_after:
            self.failures = 0  # it ran long enough to have worked: this is a new outage
        self.failures += 1
        wait = self._jitter(0.0, self.ceiling())
        self._attempt_began = now + wait
        return wait


def until_stopped(stop: threading.Event, log: logging.Logger) -> Retrying:
    """Retry transient failures with jittered backoff until ``stop`` is set (then re-raise)."""

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    backoff = Backoff()
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=backoff,
        stop=stop_when_event_set(stop),
        sleep=sleep,
        before_sleep=lambda state: _one_line(log, state, backoff.failures),
        reraise=True,
    )


def _one_line(log: logging.Logger, state: RetryCallState, failures: int) -> None:
    """One line per attempt: what failed (the error names the host and port) and when next."""
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("%s; retrying in %.1f s (attempt %d of this outage)", exc, wait, failures + 1)


@contextmanager
def stopped_quietly(stop: threading.Event, log: logging.Logger, what: str) -> Iterator[None]:
    """Swallow a TransientError that ends the block after ``stop`` was set; re-raise otherwise.

    A service told to stop while it was reconnecting has nothing in flight: a clean stop.
    """
    try:
        yield
    except TransientError as exc:
        if not stop.is_set():
            raise
        log.info("%s: stopped while reconnecting (%s)", what, exc)


def run_until_stopped(
    stop: threading.Event,
    log: logging.Logger,
    what: str,
    work: Callable[[threading.Event], None],
) -> None:
    """``work(stop)`` again after each transient failure, with jittered backoff, until
    ``stop`` is set; stopped while reconnecting, it returns quietly (see the two above)."""
    with stopped_quietly(stop, log, what):
        for attempt in until_stopped(stop, log):
            with attempt:
                work(stop)
