"""A batch's Ed25519 signatures checked ahead in a helper process while the opener works.

Verifying the signature is a third to a half of opening a delivery (~55–100 µs of ~200).
PyNaCl runs it in C without the GIL, but a helper *thread* would wait for the GIL after
every call (the interpreter hands it over every 5 ms while the opener runs Python), so one
helper process checks the batch's signatures, in chunks, on the machine's other core while
the consumer's process decodes and screens the payloads — before the batch's transaction,
when PostgreSQL has nothing to do.

The helper's answers are advisory. :meth:`AheadVerifier.verified` is True only for the exact
(public key, signed bytes, signature) the helper verified, never waits, and is False for
anything not (yet) verified there: the opener then verifies in line as it always did, and
raises the same errors. A slow, dead or missing helper changes the speed, never a decision.
Batches smaller than ``min_batch`` (a trickle, where each millisecond of latency counts)
are not sent at all.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
from collections.abc import Mapping, Sequence
from typing import Any

import nacl.signing

from exchange.wire.codec import default_store
from exchange.wire.envelope import signed_parts

log = logging.getLogger(__name__)

_Triple = tuple[bytes, bytes, bytes]  # (public key, signed bytes, signature)
_FIRST_CHUNK = 8
_MAX_DEATHS = 3  # helpers that may die before the opener stops starting them

# Helper side: nacl's VerifyKey parses its point once; a region has a handful of keys.
_VERIFIERS: dict[bytes, nacl.signing.VerifyKey] = {}


def verify_all(bodies: Sequence[bytes], keys: Mapping[str, bytes]) -> list[bytes | None]:
    """For each envelope, the public key (from ``keys``, by key id) its signature verified
    with, or None: not an envelope, an unknown key id, or a signature that does not verify.
    Runs in the helper process; never raises for bad input."""
    store = default_store()
    out: list[bytes | None] = []
    for body in bodies:
        try:
            public = keys.get(store.decode(body, expected="Envelope")[1]["key_id"])
            parts = signed_parts(body)
            if public is None or parts is None:
                out.append(None)
                continue
            verifier = _VERIFIERS.get(public)
            if verifier is None:
                verifier = _VERIFIERS[public] = nacl.signing.VerifyKey(public)
            verifier.verify(parts[0], parts[1])
            out.append(public)
        except Exception:  # nacl's CryptoError, or bytes that are no envelope: the opener decides
            out.append(None)
    return out


def serve(tasks: Any, results: Any, current: Any) -> None:
    """The helper's loop: (generation, index, bodies, keys) in, (generation, index, public
    keys) out, until None or the consumer's process is gone. A chunk of a batch the opener
    has finished (``current`` moved on) is skipped: a helper that fell behind catches up
    instead of queueing work no one will use."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            task = tasks.get(timeout=1.0)
        except queue.Empty:
            # The queue's pipe stays open in this process too, so a consumer killed with
            # SIGKILL shows only here: its helper must not outlive it.
            if parent is not None and not parent.is_alive():
                return
            continue
        except (EOFError, OSError):
            return
        if task is None:
            return
        generation, index, bodies, keys = task
        if generation == current.value:
            results.put((generation, index, verify_all(bodies, keys)))


class AheadVerifier:
    """Sends a batch's envelopes to one helper process and answers what it verified."""

    def __init__(self, *, min_batch: int = 32, chunk: int = 32) -> None:
        self.min_batch, self.chunk = min_batch, chunk
        # spawn: the registry process runs threads (relay, mover, metrics), and a fork
        # copies their locks in whatever state they are in.
        self._context = multiprocessing.get_context("spawn")
        self._helper: Any = None
        self._tasks: Any = None
        self._results: Any = None
        self._current: Any = None  # the generation being opened, shared with the helper
        self._generation = 0
        self._chunks: dict[int, list[bytes]] = {}  # this batch's chunks not answered yet
        self._known: set[_Triple] = set()
        self.helped = 0  # signatures the helper verified and the opener used
        self.deaths = 0  # helpers that exited unasked

    def start(self, bodies: Sequence[bytes], keys: Mapping[str, bytes]) -> None:
        """Forget the previous batch and send ``bodies`` to be verified with ``keys``
        (key id -> public key)."""
        self._generation += 1
        if self._current is not None:
            self._current.value = self._generation
        self._chunks.clear()
        self._known.clear()
        if len(bodies) < self.min_batch:
            return
        if not self._ensure_helper():
            return
        assert self._current is not None
        self._current.value = self._generation
        keys = dict(keys)
        # A short first chunk: the opener verifies in line until the first answer is back.
        edges = [0, *range(_FIRST_CHUNK, len(bodies), self.chunk), len(bodies)]
        for index, (start, end) in enumerate(itertools.pairwise(edges)):
            part = list(bodies[start:end])
            self._chunks[index] = part
            self._tasks.put((self._generation, index, part, keys))  # a feeder thread sends

    def verified(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """Whether the helper verified ``signature`` over ``message`` with ``public_key``
        (False when it did not, or has not yet); never waits."""
        triple = (public_key, message, signature)
        if triple not in self._known:
            if not self._chunks:
                return False
            self._collect()  # a poll of the pipe costs more than the lookup: only on a miss
            if triple not in self._known:
                return False
        self.helped += 1
        return True

    @property
    def helper_pid(self) -> int | None:
        """The helper process's id while one runs (for measuring it)."""
        return None if self._helper is None else int(self._helper.pid)

    def close(self, *, wait: bool = False) -> None:
        """Stop the helper (it ends with the consumer); ``wait`` for it to exit."""
        self._chunks.clear()
        if self._helper is None:
            return
        if self._helper.is_alive():
            self._tasks.put(None)
            self._helper.join(timeout=5.0 if wait else 0.5)
        if self._helper.is_alive():
            self._helper.terminate()
            self._helper.join(timeout=5.0)
        self._tasks.cancel_join_thread()  # what is still unsent is of no use to anyone
        self._helper = self._tasks = self._results = self._current = None

    def _ensure_helper(self) -> bool:
        """Whether a helper is running (started if need be)."""
        if self._helper is not None and not self._helper.is_alive():
            self.deaths += 1
            log.warning("signature helper exited (code %s); %s", self._helper.exitcode,
                        "starting another" if self.deaths < _MAX_DEATHS else
                        "verifying in line from now on")  # fmt: skip
            self.close()
        if self.deaths >= _MAX_DEATHS:
            return False  # e.g. it cannot start at all (a main module spawn cannot import)
        if self._helper is None:
            self._tasks, self._results = self._context.Queue(), self._context.Queue()
            self._current = self._context.Value("q", self._generation, lock=False)
            self._helper = self._context.Process(
                target=serve,
                args=(self._tasks, self._results, self._current),
                name="kpx-verify",
                daemon=True,
            )
            self._helper.start()
        return True

    def _collect(self) -> None:
        while not self._results.empty():  # a poll of the pipe: cheaper than a failed get
            try:
                generation, index, publics = self._results.get_nowait()
            except queue.Empty:
                return
            bodies = self._chunks.pop(index, None) if generation == self._generation else None
            if bodies is None:
                continue  # a batch that is done
            for body, public in zip(bodies, publics, strict=True):
                parts = signed_parts(body) if public is not None else None
                if public is not None and parts is not None:
                    self._known.add((public, parts[0], parts[1]))
