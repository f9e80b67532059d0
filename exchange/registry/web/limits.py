"""A per-client rate limit for public lookups: a token bucket per address, bounded memory.

The foundation's login limiter counts failures; a verification flood is counted per request,
so the public pages use this bucket instead (the lead may fold it into exchange/web).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class RateLimit:
    """``rate`` requests per second per client, bursts up to ``burst``.

    At most ``clients`` buckets are kept, the least recently seen dropped first, so a flood
    from many addresses cannot grow memory without bound.
    """

    rate: float
    burst: float
    clients: int = 10_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str, now: float | None = None) -> bool:
        """Take one token for ``client``; False when its bucket is empty."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[client] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.clients:
                self._buckets.popitem(last=False)
            return allowed
