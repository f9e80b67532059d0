"""A fuzz loop: random and mutated bytes through ``decode`` and ``open_envelope``.

Valid envelopes of several event types are sealed with a fresh key; each case is one of:
random bytes, a valid envelope with bit flips, truncated, with bytes appended, two envelopes
spliced at random points, or a random byte string behind a valid header. Every case goes
through ``SchemaStore.decode`` and ``open_envelope``; outcomes are counted by exception
class, and any exception outside :class:`exchange.errors.KpxError` is a failure (a consumer
would crash on it instead of dead-lettering the message).

``python -m benchmarks.fuzz [N]`` (default 100,000).
"""

from __future__ import annotations

import collections
import random
import sys
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal

from benchmarks import Row
from exchange.errors import KpxError
from exchange.wire.codec import SchemaStore, default_store
from exchange.wire.envelope import open_envelope, seal
from exchange.wire.signing import Keyring, generate_key


def _samples(store: SchemaStore, keyring: Keyring) -> list[bytes]:
    signer = generate_key("BW")
    keyring.add(signer.verify_key)
    records = [
        ("ProductionDeclared", {"participant": "BW", "period": "2026-H1",
                                "producer_id": "BW-MINE-1", "carats": Decimal("1200.00"),
                                "value_usd": Decimal("250000.00")}),
        ("CertificateVoided", {"certificate_id": "XS-BW-2026-0000001-03",
                               "issuing_participant": "XS", "voided_on": date(2026, 11, 21),
                               "reason": "re-weighed", "replaced_by": None}),
        ("ImportConfirmed", {"certificate_id": "AE-DXB-1", "issuing_participant": "AE",
                             "importing_participant": "BW", "received_on": date(2026, 11, 22),
                             "parcels": 1, "carats": Decimal("250.00"),
                             "value_usd": Decimal("50000.00"), "seal_intact": True,
                             "remarks": ""}),
    ]  # fmt: skip
    return [seal(store, signer, kind, record, i + 1)[1] for i, (kind, record) in enumerate(records)]


def _mutators(rng: random.Random, valid: list[bytes]) -> list[Callable[[], bytes]]:
    def flip() -> bytes:
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)

    def truncate() -> bytes:
        data = rng.choice(valid)
        return data[: rng.randrange(len(data))]

    def extend() -> bytes:
        return rng.choice(valid) + rng.randbytes(rng.randint(1, 64))

    def splice() -> bytes:
        a, b = rng.choice(valid), rng.choice(valid)
        return a[: rng.randrange(len(a))] + b[rng.randrange(len(b)) :]

    def header_then_noise() -> bytes:
        return rng.choice(valid)[:10] + rng.randbytes(rng.randint(0, 400))

    def noise() -> bytes:
        return rng.randbytes(rng.randint(0, 600))

    return [flip, flip, truncate, extend, splice, header_then_noise, noise]


def run(n: int = 100_000, seed: int = 7202) -> list[Row]:
    """Run ``n`` cases; raise AssertionError if any ends outside KpxError."""
    store, keyring, rng = default_store(), Keyring(), random.Random(seed)
    valid = _samples(store, keyring)
    mutators = _mutators(rng, valid)
    outcomes: collections.Counter[str] = collections.Counter()
    escaped: list[tuple[bytes, BaseException]] = []
    started = time.perf_counter()
    for _ in range(n):
        data = rng.choice(mutators)()
        try:
            store.decode(data)
            open_envelope(store, keyring, data)
            outcomes["accepted"] += 1
        except KpxError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # the finding this loop exists for
            outcomes[f"UNMAPPED {type(exc).__name__}"] += 1
            escaped.append((data, exc))
    elapsed = time.perf_counter() - started
    summary = ", ".join(f"{k} {v:,}" for k, v in outcomes.most_common())
    assert not escaped, f"{len(escaped)} cases escaped KpxError, e.g. {escaped[0]!r}"
    return [
        Row("fuzz: random/mutated bytes through decode + open_envelope", n / elapsed, "cases/s",
            goal="every outcome a KpxError", met=not escaped,
            note=f"{n:,} cases (seed {seed}): {summary}"),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000):
        print(f"{row.what}: {row.figure:,.0f} {row.unit}; {row.note}")
