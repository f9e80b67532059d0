"""Security settings in one place: passwords, tokens, CSRF, login rate limits, headers, limits.

Every web face of kpx takes its cookie flags, headers and limits from :class:`WebSecurity`, so
that a change here is a change everywhere; pages never set a security header themselves.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# No external origin at all: everything a page needs is served by kpx itself. No inline
# script either ('unsafe-inline' would give an injected <script> back its power).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
)


@dataclass(frozen=True, slots=True)
class WebSecurity:
    """The knobs of a web face; defaults are the production values."""

    max_body_bytes: int = 1024 * 1024  # an operation is at most 1 MiB (DESIGN §9)
    session_seconds: int = 8 * 3600  # an officer's working day
    login_attempts: int = 5  # failures per user name, within login_window_seconds
    # Per address: higher, since a ministry's clerks may all sign in from behind one NAT.
    login_attempts_per_address: int = 50
    login_window_seconds: float = 300.0
    cookie_name: str = "kpx_session"
    headers: tuple[tuple[str, str], ...] = SECURITY_HEADERS


# -- passwords --------------------------------------------------------------------------------

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted; the text to store)."""
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; never raises on a bad hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_nobody(password: str) -> bool:
    """Spend the time of a verification for a user that does not exist; always False.

    Verifying against a real hash keeps the answer's timing from telling an attacker which
    user names exist (made on first use: every kpx command imports this module).
    """
    verify_password(_dummy_hash(), password)
    return False


# -- bearer tokens ----------------------------------------------------------------------------

TOKEN_PREFIX = "kpx_"


def new_token() -> str:
    """A fresh bearer token (shown once; only its digest is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The stored form of a token: SHA-256 suffices for 256 random bits (no brute force)."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- CSRF -------------------------------------------------------------------------------------


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the form's."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# -- login rate limiting ----------------------------------------------------------------------


@dataclass
class RateLimiter:
    """At most ``attempts`` failures per key within ``window`` seconds (a sliding window).

    In memory: a web face is one process, and a restart forgetting the count is acceptable
    (the window is minutes).
    """

    attempts: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key)) >= self.attempts

    def fail(self, key: str) -> None:
        with self._lock:
            self._recent(key).append(self._now())

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _now(self) -> float:
        return self.clock()

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        horizon = self._now() - self.window
        while times and times[0] < horizon:
            times.popleft()
        return times
