"""The registry's SQL: locks, loading the view a batch needs, writing what it decided.

Every function takes a cursor inside the caller's transaction; nothing here commits. Errors
are psycopg2's, translated by the caller's ``exchange.adapters.postgres.transaction``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg2
import psycopg2.extras

from exchange.adapters.pgcopy import copy_rows
from exchange.adapters.postgres import Connection, Cursor
from exchange.domain.certificate import Certificate
from exchange.domain.codes import CertificateState, Decision
from exchange.domain.region import Region
from exchange.registry import keys, limits, register
from exchange.registry.changes import Changes, Declared
from exchange.registry.policy import CertRecord, Event, View
from exchange.wire.signing import Keyring, VerifyKey

_PAGE = 500


@dataclass(frozen=True, slots=True)
class LogRow:
    """One event_log row: the evidence and the decision about one message."""

    key: str  # primary key: the event id, or a digest of the bytes of an unauthentic message
    producer: str
    sequence: int | None
    event_type: str
    produced_at: Any
    certificate_id: str | None
    decision: str
    reason: str | None
    detail: str
    body: bytes
    claimed_event_id: str | None


@dataclass(frozen=True, slots=True)
class Redecided:
    """A held event_log row decided now: its new decision."""

    event_id: str
    decision: str
    reason: str | None
    detail: str


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock(cur: Cursor, names: Iterable[str]) -> None:
    """Take transaction-level advisory locks on ``names``, in one sorted order.

    Two registry processes lock in the same (sorted key) order, so they wait for each other
    but never deadlock; the locks go with the commit.
    """
    keys = sorted({lock_key(n) for n in names})
    if keys:
        cur.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "unnest(%s::bigint[]) WITH ORDINALITY AS t(k, n)",
            (keys,),
        )


def held_certificates(cur: Cursor, producers: Sequence[str]) -> list[str]:
    """Certificate ids of held voids of ``producers`` (to lock them with the batch)."""
    cur.execute(
        "SELECT certificate_id FROM event_log WHERE decision = %s AND producer = ANY(%s)",
        (Decision.HELD.value, list(producers)),
    )
    return [r[0] for r in cur.fetchall() if r[0] is not None]


def held_bodies(cur: Cursor, producers: Sequence[str]) -> list[bytes]:
    """The signed bytes of the held voids of ``producers``, in sequence order."""
    cur.execute(
        "SELECT body FROM event_log WHERE decision = %s AND producer = ANY(%s) "
        "ORDER BY producer, sequence",
        (Decision.HELD.value, list(producers)),
    )
    return [bytes(r[0]) for r in cur.fetchall()]


def load_book(cur: Cursor) -> dict[str, str]:
    """Participant code -> status."""
    cur.execute("SELECT code, status FROM participants")
    return {code: status for code, status in cur.fetchall()}


def load_view(
    cur: Cursor,
    keys: Sequence[str],
    producers: Sequence[str],
    certificate_ids: Sequence[str],
    sequences: Sequence[tuple[str, int]],
    filled: Mapping[str, set[int]],
) -> View:
    """The view of everything a batch touches (held voids are added by the caller);
    ``filled`` is limits.gaps_filled of ``sequences``, read once by the caller."""
    view = View(book=load_book(cur), register=register.load(cur, producers))
    cur.execute("SELECT event_id::text FROM event_log WHERE event_id = ANY(%s::uuid[])", (keys,))
    view.seen = {r[0] for r in cur.fetchall()}
    _load_certificates(cur, view, certificate_ids)
    _load_sequences(cur, view, producers, sequences, filled)
    _load_confirmations(cur, view, certificate_ids)
    return view


def _load_confirmations(cur: Cursor, view: View, certificate_ids: Sequence[str]) -> None:
    """The import confirmations of the batch's certificates, in one round trip: those still
    waiting for their certificate, and what was confirmed for each (policy.confirmation_fact,
    from the rows)."""
    cur.execute(
        "SELECT certificate_id, event_id::text, matched, importing_participant, received_on, "
        "parcels, carats, value_usd, seal_intact, remarks FROM import_confirmations "
        "WHERE certificate_id = ANY(%s)",
        (list(certificate_ids),),
    )
    for cert_id, event_id, matched, *fact in cur.fetchall():
        if not matched:
            view.waiting.setdefault(cert_id, []).append((event_id, fact[0]))
        view.confirmed.setdefault(cert_id, set()).add(tuple(fact))


def _load_certificates(cur: Cursor, view: View, certificate_ids: Sequence[str]) -> None:
    cur.execute(
        "SELECT certificate_id, COALESCE(issuing_member, issuing_participant), state, "
        "event_id::text, content_hash, body, destination FROM certificates "
        "WHERE certificate_id = ANY(%s)",
        (list(certificate_ids),),
    )
    for cert_id, issuer, state, event_id, digest, body, dest in cur.fetchall():
        view.certs[cert_id] = CertRecord(
            cert_id, issuer, state, event_id, bytes(digest), body, destination=dest
        )


def _load_sequences(
    cur: Cursor,
    view: View,
    producers: Sequence[str],
    sequences: Sequence[tuple[str, int]],
    filled: Mapping[str, set[int]],
) -> None:
    cur.execute(
        "SELECT ps.producer, ps.sequence, ps.event_id::text FROM producer_sequences ps "
        "JOIN unnest(%s::text[], %s::bigint[]) AS k(p, s) ON ps.producer = k.p "
        "AND ps.sequence = k.s",
        ([p for p, _ in sequences], [s for _, s in sequences]),
    )
    view.used = {(p, s): e for p, s, e in cur.fetchall()}
    cur.execute(
        "SELECT producer, high_water FROM producer_progress WHERE producer = ANY(%s)",
        (list(producers),),
    )
    view.high_water = dict(cur.fetchall())
    view.open_gaps = limits.load_open_gaps(cur, producers, sequences, filled)


def _values(cur: Cursor, query: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        psycopg2.extras.execute_values(cur, query, rows, page_size=_PAGE)


# The big plain inserts (event log, certificates, parcels, history) go by COPY: a third of
# the SQL cost of execute_values on this machine. Statements with ON CONFLICT keep
# execute_values (COPY has none).
_LOG_COLUMNS = (
    "event_id", "producer", "sequence", "event_type", "produced_at", "certificate_id",
    "decision", "reason", "detail", "body", "claimed_event_id",
)  # fmt: skip
_CERTIFICATE_COLUMNS = (
    "certificate_id", "producer", "issuing_participant", "issuing_member", "destination",
    "scope", "origin_type", "origin_countries", "date_of_issue", "date_of_expiry",
    "number_of_parcels", "total_carats", "total_value_usd", "body", "content_hash", "state",
    "event_id",
)  # fmt: skip
_PARCEL_COLUMNS = ("certificate_id", "parcel_no", "hs_code", "carats", "value_usd",
                   "origin_country", "producer_id")  # fmt: skip
_HISTORY_COLUMNS = ("certificate_id", "event_id", "event_type", "state", "detail")


def write_log(cur: Cursor, rows: Sequence[LogRow], updates: Sequence[Redecided]) -> None:
    """Insert new event_log rows; update the decision of held rows decided now."""
    copy_rows(
        cur,
        "event_log",
        _LOG_COLUMNS,
        [
            (
                r.key,
                r.producer,
                r.sequence,
                r.event_type,
                r.produced_at,
                r.certificate_id,
                r.decision,
                r.reason,
                r.detail,
                r.body,
                r.claimed_event_id,
            )
            for r in rows
        ],
    )
    _values(
        cur,
        "UPDATE event_log e SET decision = v.decision, reason = v.reason, detail = v.detail "
        "FROM (VALUES %s) AS v(event_id, decision, reason, detail) "
        "WHERE e.event_id = v.event_id::uuid",
        [(u.event_id, u.decision, u.reason, u.detail) for u in updates],
    )


def write_changes(cur: Cursor, out: Changes) -> None:
    """Write the sequence bookkeeping and the state rows the verdicts produced."""
    _write_sequences(cur, out)
    register.write(cur, out.register)
    keys.write_rotations(cur, out.keys)
    _write_certificates(cur, out)
    _write_confirmations(cur, out)
    _values(
        cur,
        "INSERT INTO production (event_id, participant, period, producer_id, carats, value_usd) "
        "VALUES %s",
        [
            (x.event_id, d.participant, d.period, d.producer_id, d.carats, d.value_usd)
            for x in out.production
            if (d := x.declaration)
        ],
    )
    _supersede(cur, out.production)


def _supersede(cur: Cursor, production: Sequence[Declared]) -> None:
    """A second declaration for a member, producer and period is a revision (DESIGN §9): the
    earlier rows stay as history, marked superseded by the latest (in decision order)."""
    latest = {
        (x.declaration.participant, x.declaration.producer_id, x.declaration.period): x.event_id
        for x in production
    }
    _values(
        cur,
        "UPDATE production p SET superseded_by = v.event_id::uuid "
        "FROM (VALUES %s) AS v(participant, producer_id, period, event_id) "
        "WHERE p.participant = v.participant AND p.producer_id = v.producer_id "
        "AND p.period = v.period AND p.event_id <> v.event_id::uuid "
        "AND p.superseded_by IS NULL",
        [(*key, e) for key, e in sorted(latest.items())],
    )


def _write_confirmations(cur: Cursor, out: Changes) -> None:
    _values(
        cur,
        "INSERT INTO import_confirmations (event_id, certificate_id, issuing_participant, "
        "importing_participant, received_on, parcels, carats, value_usd, seal_intact, remarks, "
        "matched) VALUES %s",
        [
            (x.event_id, c.certificate_id, c.issuing_participant, c.importing_participant,
             c.received_on, c.parcels, c.carats, c.value_usd, c.seal_intact, c.remarks,
             x.matched)
            for x in out.confirmations
            if (c := x.confirmation)
        ],
    )  # fmt: skip
    if out.matched:
        cur.execute(
            "UPDATE import_confirmations SET matched = true WHERE event_id = ANY(%s::uuid[])",
            (out.matched,),
        )


def _write_sequences(cur: Cursor, out: Changes) -> None:
    _values(
        cur,
        "INSERT INTO producer_sequences (producer, sequence, event_id) VALUES %s "
        "ON CONFLICT DO NOTHING",
        [(u.producer, u.sequence, u.event_id) for u in out.sequences],
    )
    _values(
        cur,
        "INSERT INTO producer_progress (producer, high_water) VALUES %s ON CONFLICT (producer) "
        "DO UPDATE SET high_water = GREATEST(producer_progress.high_water, EXCLUDED.high_water)",
        sorted(out.high_water.items()),
    )
    limits.write_gaps(cur, out.gaps_opened, out.gaps_filled)


def _write_certificates(cur: Cursor, out: Changes) -> None:
    copy_rows(
        cur,
        "certificates",
        _CERTIFICATE_COLUMNS,
        [_certificate_row(n.certificate, n.producer, n.event) for n in out.certificates],
    )
    copy_rows(
        cur,
        "parcels",
        _PARCEL_COLUMNS,
        [
            (
                c.certificate_id,
                p.parcel_no,
                p.hs_code.value,
                p.carats,
                p.value_usd,
                p.origin_country,
                p.producer_id,
            )
            for c in (n.certificate for n in out.certificates)
            for p in c.parcels
        ],
    )
    final: dict[str, tuple[str | None, str]] = {}
    for change in out.state_changes:
        cert_id, replaced_by = change.certificate_id, change.replaced_by
        final[cert_id] = (replaced_by or final.get(cert_id, (None, ""))[0], change.state)
    _values(
        cur,
        "UPDATE certificates c SET state = v.state, "
        "replaced_by = COALESCE(v.replaced_by, c.replaced_by) "
        "FROM (VALUES %s) AS v(certificate_id, replaced_by, state) "
        "WHERE c.certificate_id = v.certificate_id",
        sorted((k, rb, st) for k, (rb, st) in final.items()),
    )
    history = [(h.certificate_id, h.event_id, h.event_type, h.state, h.detail) for h in out.history]
    copy_rows(cur, "certificate_history", _HISTORY_COLUMNS, history)


def _certificate_row(cert: Certificate, producer: str, event: Event) -> tuple[Any, ...]:
    return (
        cert.certificate_id,
        producer,
        cert.issuing_participant,
        cert.issuing_member,
        cert.destination,
        cert.scope.value,
        cert.origin.type.value,
        list(cert.origin.countries),
        cert.date_of_issue,
        cert.date_of_expiry,
        cert.number_of_parcels,
        cert.total_carats,
        cert.total_value_usd,
        event.cert_text,  # canonical JSON text; the column's jsonb input parses it
        event.cert_digest,
        CertificateState.ISSUED.value,  # plain str: COPY's fast path takes exact types only
        event.event_id,
    )


# --------------------------------------------------------------------------- participants


def seed_participants(cur: Cursor, region: Region) -> int:
    """Insert or refresh the participants of the region file; return how many rows changed.

    A status set later by a suspend/reinstate command (``changed_by_event``) is never
    overwritten, so restarting the registry does not undo a suspension.
    """
    roles = {region.code: "REGION"}
    roles.update((m.code, "MEMBER") for m in region.members)
    roles.update((p.code, "PARTNER") for p in region.partners)
    rows = [(code, roles.get(code, "OTHER"), status) for code, status in region.book().items()]
    changed = psycopg2.extras.execute_values(
        cur,
        "INSERT INTO participants AS p (code, role, status, reason) VALUES %s "
        "ON CONFLICT (code) DO UPDATE SET role = EXCLUDED.role, status = EXCLUDED.status, "
        "updated_at = now() WHERE NOT p.changed_by_event "
        "AND (p.status, p.role) IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.role) "
        "RETURNING code, status",
        [(*row, "region file") for row in rows],
        page_size=_PAGE,
        fetch=True,
    )
    _values(
        cur,
        "INSERT INTO participant_history (code, status, reason) VALUES %s",
        [(code, status, "region file") for code, status in changed],
    )
    return len(changed)


def set_status(
    cur: Cursor, code: str, status: str, effective_on: date, reason: str, event_id: str | None
) -> None:
    """Record a participant's new status and its history row."""
    cur.execute(
        "INSERT INTO participants AS p (code, role, status, effective_on, reason, "
        "changed_by_event) VALUES (%s, 'OTHER', %s, %s, %s, true) ON CONFLICT (code) DO UPDATE "
        "SET status = EXCLUDED.status, effective_on = EXCLUDED.effective_on, "
        "reason = EXCLUDED.reason, changed_by_event = true, updated_at = now()",
        (code, status, effective_on, reason),
    )
    cur.execute(
        "INSERT INTO participant_history (code, status, effective_on, reason, event_id) "
        "VALUES (%s, %s, %s, %s, %s)",
        (code, status, effective_on, reason, event_id),
    )


# --------------------------------------------------------------------------- keys


def register_key(cur: Cursor, key: VerifyKey) -> bool:
    """Register an authority public key; True when it was new."""
    cur.execute(
        "INSERT INTO authority_keys (key_id, producer, public_key) VALUES (%s, %s, %s) "
        "ON CONFLICT (key_id) DO NOTHING",
        (key.key_id, key.producer, psycopg2.Binary(key.public_key)),
    )
    return bool(cur.rowcount)


def load_keyring(conn: Connection) -> Keyring:
    """Every registered authority key, with its revocation (see exchange/registry/keys.py)."""
    return keys.load_keyring(conn)
