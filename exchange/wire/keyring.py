"""A keyring that learns: refreshed from its source of truth when it meets an unknown key id.

Every verifier (registry, reconciler, node inbox) holds one. A key rotated in while it runs
reaches it through its ``KeyRotated`` event: the registry writes the new key to its key table
in the transaction that accepts the event, and the node signs with it only after that answer,
so the first message under the new key finds the verifier without it, and the verifier
refreshes from the source of truth (the registry's key table, or a node's key folder) —
*before* it gives up. No restart, no ``region init``. Downstream of the
registry (the reconciler) every event was verified already, so a key id still unknown after a
refresh is only late: ``transient_unknown`` makes that a KeyNotYetKnown (a TransientError, the
batch is retried), never a dead letter.

A revocation is learnt by age: with ``max_age`` the keyring is reloaded before verifying once
it is older than that (the registry uses a second), so a key revoked while the registry runs
is refused from then on without a restart.

Refreshes are throttled to one per ``min_interval`` seconds for the same unknown key id, so a
flood of messages naming made-up ids costs one lookup per interval, not one per message; a new
key id is always looked up at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from exchange.errors import BadSignature, KeyNotYetKnown, UnknownKey
from exchange.wire.signing import Keyring, VerifyKey

__all__ = ["RefreshingKeyring"]


class RefreshingKeyring:
    """Keyring.verify over a keyring reloaded with ``load()`` when a key id is unknown."""

    def __init__(
        self,
        load: Callable[[], Keyring],
        *,
        transient_unknown: bool = False,
        min_interval: float = 1.0,
        max_age: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._transient = transient_unknown
        self._min_interval = min_interval
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._ring = load()
        self._loaded_at = clock()
        self._tried: dict[str, float] = {}  # unknown key id -> when it was last looked up
        self.refreshes = 0

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._ring

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(self._ring)

    def get(self, key_id: str) -> VerifyKey | None:
        """The key held under ``key_id`` (without refreshing), or None."""
        return self._ring.get(key_id)

    def refresh(self) -> None:
        """Reload from the source of truth (raises what ``load`` raises, e.g. a TransientError)."""
        ring = self._load()
        with self._lock:
            self._ring = ring
            self._loaded_at = self._clock()
            self.refreshes += 1

    def verify(self, key_id: str, producer: str, message: bytes, signature: bytes) -> None:
        """Keyring.verify, after a refresh when ``key_id`` is unknown.

        Raises BadSignature; UnknownKey for a key id still unknown after the refresh (or
        KeyNotYetKnown with ``transient_unknown``).
        """
        self.key_for(key_id, producer).verify(message, signature)

    def key_for(self, key_id: str, producer: str) -> VerifyKey:
        """The key :meth:`verify` checks a signature with: reloaded first when older than
        ``max_age``, refreshed when ``key_id`` is unknown; raises as :meth:`verify` does."""
        if self._max_age is not None and self._clock() - self._loaded_at >= self._max_age:
            self.refresh()
        if key_id not in self._ring:
            self._refresh_for(key_id)
        try:
            return self._ring.key_for(key_id, producer)
        except UnknownKey as exc:
            if self._transient and key_id not in self._ring:
                raise KeyNotYetKnown(f"{exc}; not registered yet, retrying later") from exc
            raise

    def check_in_force(self, key_id: str, produced_at: datetime, sequence: int) -> None:
        """BadSignature when ``key_id`` was revoked for this event (see VerifyKey)."""
        key = self._ring.get(key_id)
        if key is not None and not key.signed_in_force(produced_at, sequence):
            raise BadSignature(
                f"key id {key_id!r} of {key.producer} is revoked from {key.revoked_from} "
                f"(and above sequence {key.revoked_above}); event {sequence} produced at "
                f"{produced_at.isoformat()} under it is not accepted"
            )

    def _refresh_for(self, key_id: str) -> None:
        now = self._clock()
        last = self._tried.get(key_id)
        if last is not None and now - last < self._min_interval:
            return
        if len(self._tried) > 10_000:  # made-up ids must not grow this without bound
            self._tried.clear()
        self._tried[key_id] = now
        self.refresh()
