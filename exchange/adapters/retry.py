"""The one reconnect policy of every long-running kpx loop (relays and consumers).

Only :class:`~exchange.errors.TransientError` is retried — a lost broker or database — with
jittered exponential backoff from about half a second up to 15 s, until the service is told
to stop; a SIGTERM also cuts the current backoff short. Anything else propagates at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_when_event_set,
    wait_random_exponential,
)

from exchange.errors import TransientError

_MAX_BACKOFF = 15.0  # seconds: short enough that a restarted broker is found again quickly


def until_stopped(stop: threading.Event, log: logging.Logger) -> Retrying:
    """Retry transient failures with jittered backoff until ``stop`` is set (then re-raise)."""

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    return Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=wait_random_exponential(multiplier=0.5, max=_MAX_BACKOFF),
        stop=stop_when_event_set(stop),
        sleep=sleep,
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


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
