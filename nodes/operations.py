"""A national authority's operations: issue, void, confirm_import, declare_production.

Each operation is validated with the same pure rules the registry applies, then commits its
business row and its signed outbox event in one transaction (a savepoint per operation inside
a chunk of operations, so a refused line leaves nothing behind and the others still apply).
The broker is never touched here: the outbox relay publishes later, so operations succeed
while the regional link is down.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from exchange.adapters.postgres import Connection, Cursor, transaction
from exchange.domain import rules
from exchange.domain.certificate import Certificate, CertificateDraft
from exchange.domain.certnumber import regional_number
from exchange.domain.events import ImportConfirmation, Issuance, ProductionDeclaration, Voiding
from exchange.domain.region import Region
from exchange.domain.register import (
    Register,
    RegisterEntry,
    Revocation,
    apply_event,
    certificate_refusal,
    declaration_refusal,
    event_refusal,
)
from exchange.errors import Refusal
from exchange.messaging.outbox import OutboxWriter, Pending
from exchange.wire import topology
from exchange.wire.envelope import MAX_EVENT_BYTES
from nodes import register as register_store
from nodes import requests, store

log = logging.getLogger(__name__)

SCHEMA_INVALID = "SCHEMA_INVALID"
ISSUE_KEYS = frozenset({"op", "member", "request_id", "certificate"})

Recorder = Callable[[Cursor, list["Result"]], None]


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one input line: ``ok`` with its subject, or refused with a reason."""

    line: int
    ok: bool
    subject: str = ""
    code: str = ""
    sentence: str = ""
    already: bool = False  # the request_id had been applied before: this is its answer

    def __str__(self) -> str:
        if self.ok:
            text = f"{self.line} ok {self.subject}"
            return text + " (already applied)" if self.already else text
        return f"{self.line} refused {self.code} {self.sentence}"


class Node:
    """One member's or partner's authority: applies operations to its store and outbox."""

    def __init__(
        self,
        code: str,
        region: Region,
        writer: OutboxWriter,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.code = code
        self.region = region
        self.settings = region.node(code)
        self.writer = writer
        self.today = today or (lambda: datetime.now(UTC).date())
        self.is_member = region.is_member(code)
        self._events: list[tuple[Pending, str]] = []  # the current chunk's events, in order
        self._register = Register()  # this member's register, loaded per chunk (§14)

    # -- entry points --

    def submit(
        self,
        conn: Connection,
        lines: Iterable[str | Mapping[str, Any]],
        chunk: int = 500,
        record: Recorder | None = None,
    ) -> Iterator[Result]:
        """Apply JSON Lines operations; yield one Result per line, after its chunk committed.

        A line may also be an operation already parsed (with ``parse_float=Decimal``), as the
        HTTP API has it: the same rules apply, without parsing it twice.

        ``record(cur, results)`` runs inside each chunk's transaction, after its operations:
        what the caller writes there (an audit trail) commits with them or not at all.
        """
        pending: list[tuple[int, str | Mapping[str, Any]]] = []
        for number, line in enumerate(lines, start=1):
            pending.append((number, line))
            if len(pending) >= chunk:
                yield from self._apply_chunk(conn, pending, record)
                pending = []
        if pending:
            yield from self._apply_chunk(conn, pending, record)

    def apply(self, conn: Connection, operation: Mapping[str, Any]) -> Result:
        """Apply one operation (already parsed) in its own transaction."""
        return next(iter(self._apply_chunk(conn, [(1, json.dumps(operation, default=str))])))

    def _apply_chunk(
        self,
        conn: Connection,
        lines: list[tuple[int, str | Mapping[str, Any]]],
        record: Recorder | None = None,
    ) -> list[Result]:
        # Consecutive issue operations are validated in Python first and then written as a
        # group: one statement numbers them, one inserts them (a few round trips for the
        # whole group instead of several per certificate). Any other operation runs alone
        # under a savepoint, so a refused one leaves nothing behind. The events of accepted
        # operations are sealed and appended together at the end of the chunk, which takes
        # their sequence numbers in one statement, gap-free.
        results: dict[int, Result] = {}
        self._events = []
        with transaction(conn) as cur:
            parsed = _parse_all(lines, results)
            todo, repeats = self._skip_applied(cur, parsed, results)
            book = self._book(cur)
            self._register = register_store.load(cur, self.code)
            group: list[tuple[int, CertificateDraft]] = []
            for number, op in todo:
                if op.get("op") == "issue":
                    try:
                        _reject_unknown(op, ISSUE_KEYS)
                        group.append((number, self._draft(op.get("certificate"), book)))
                    except Refusal as refusal:
                        results[number] = _refused(number, refusal)
                    continue
                self._issue_group(cur, group, results)
                group = []
                results[number] = self._apply_one(cur, number, op, book)
            self._issue_group(cur, group, results)
            self._flush_events(cur)
            requests.answer_repeats(repeats, results)
            store.remember_requests(cur, requests.applied(parsed, results))
            if record is not None:
                record(cur, [results[number] for number, _ in lines])
        return [results[number] for number, _ in lines]

    def _skip_applied(
        self,
        cur: Cursor,
        parsed: list[tuple[int, Mapping[str, Any], str | None]],
        results: dict[int, Result],
    ) -> tuple[list[tuple[int, Mapping[str, Any]]], dict[int, int]]:
        """The operations to apply; those whose request_id was applied get its answer.

        The request ids are locked first (until commit), so two submissions carrying the
        same id one after the other — a national system retrying after a timeout while its
        first request still runs — apply it once. Returns the operations to apply and the
        repeats inside this chunk (line -> the earlier line with the same request_id).
        """
        ids = {rid for _, _, rid in parsed if rid is not None}
        store.lock_requests(cur, ids)
        done = store.applied_requests(cur, ids)
        todo: list[tuple[int, Mapping[str, Any]]] = []
        first: dict[str, int] = {}
        repeats: dict[int, int] = {}
        for number, op, rid in parsed:
            if rid is not None and rid in done:
                results[number] = Result(number, True, subject=done[rid], already=True)
            elif rid is not None and rid in first:
                repeats[number] = first[rid]
            else:
                if rid is not None:
                    first[rid] = number
                todo.append((number, op))
        return todo, repeats

    def _apply_one(
        self, cur: Cursor, number: int, op: Mapping[str, Any], book: Mapping[str, str]
    ) -> Result:
        cur.execute("SAVEPOINT op")
        queued = len(self._events)
        try:
            subject = self._dispatch(cur, op, book)
        except Refusal as refusal:
            cur.execute("ROLLBACK TO SAVEPOINT op")
            del self._events[queued:]
            return _refused(number, refusal)
        cur.execute("RELEASE SAVEPOINT op")
        return Result(number, True, subject=subject)

    def _flush_events(self, cur: Cursor) -> None:
        pending = [p for p, _ in self._events]
        appended = self.writer.append_many(cur, pending)
        store.record_events(
            cur,
            [
                (a.event_id, a.sequence, p.event_type, subject)
                for a, (p, subject) in zip(appended, self._events, strict=True)
            ],
        )
        self._events = []

    def _book(self, cur: Cursor) -> dict[str, str]:
        book = self.region.book()
        book.update(store.participant_overrides(cur))
        return book

    def _dispatch(self, cur: Cursor, op: Mapping[str, Any], book: Mapping[str, str]) -> str:
        kind = op.get("op")
        body = {k: v for k, v in op.items() if k not in ("op", "member", "request_id")}
        if kind == "void":
            return self.void(cur, body)
        if kind == "confirm_import":
            return self.confirm_import(cur, body, book)
        if kind == "declare_production":
            return self.declare_production(cur, body)
        if kind in ("register", "revoke"):
            return self.register(cur, body) if kind == "register" else self.revoke(cur, body)
        raise Refusal(
            SCHEMA_INVALID,
            "op must be issue, void, confirm_import, declare_production, register or revoke, "
            f"got {kind!r}",
        )

    def check_issue(self, cur: Cursor, certificate: Any) -> CertificateDraft:
        """Validate an issue's certificate by the node's rules, writing nothing (a draft is
        checked so before it is saved). Raises Refusal."""
        return self._draft(certificate, self._book(cur))

    # -- operations (inside the caller's transaction) --

    def _draft(self, obj: Any, book: Mapping[str, str]) -> CertificateDraft:
        """Parse and validate an ``issue`` certificate (pure: no database yet)."""
        if not isinstance(obj, Mapping):
            raise Refusal(SCHEMA_INVALID, "certificate must be a JSON object")
        draft = CertificateDraft.from_json(
            obj,
            issuing_participant=self.region.code if self.is_member else self.code,
            issuing_member=self.code if self.is_member else None,
            issuing_authority=self.settings.authority,
            members=self.region.member_codes,
        )
        if draft.certificate_id is None and not self.is_member:
            raise Refusal(
                SCHEMA_INVALID,
                f"certificate_id is missing: {self.code} is a partner "
                "and numbers its own certificates",
            )
        refusal = rules.check_certificate(
            draft, self.code, book, self.region.policy,
            region_code=self.region.code, members=self.region.member_codes,
        ) or certificate_refusal(draft, self._register, self.region.policy.registers)  # fmt: skip
        if refusal is not None:
            raise refusal
        return draft

    def _issue_group(
        self, cur: Cursor, group: list[tuple[int, CertificateDraft]], results: dict[int, Result]
    ) -> None:
        """Number and store a group of validated certificates, in input order."""
        seen: set[str] = set()
        todo: list[tuple[int, CertificateDraft]] = []
        for number, draft in group:
            if draft.certificate_id in seen:
                results[number] = _duplicate(number, draft.certificate_id)
                continue
            if draft.certificate_id is not None:
                seen.add(draft.certificate_id)
            todo.append((number, draft))
        while todo:
            numbered = self._numbered(cur, todo)
            stored = store.insert_certificates(cur, [(c, r, e) for _, _, c, r, e in numbered])
            todo = []
            for number, draft, cert, record, event_id in numbered:
                # Two rows of one statement may carry the same number (a stated number equal
                # to a freshly allocated one): the first in input order is the one stored.
                if cert.certificate_id in stored:
                    stored.discard(cert.certificate_id)
                    self._emit(record, "CertificateIssued", cert.certificate_id, event_id)
                    results[number] = Result(number, True, subject=cert.certificate_id)
                elif draft.certificate_id is not None:
                    results[number] = _duplicate(number, draft.certificate_id)
                else:  # the national system had already used this serial: take the next one
                    todo.append((number, draft))

    def _numbered(
        self, cur: Cursor, todo: list[tuple[int, CertificateDraft]]
    ) -> list[tuple[int, CertificateDraft, Certificate, dict[str, Any], str]]:
        """Each draft with its number (the next serials of its year when it has none)."""
        wanted = Counter(d.date_of_issue.year for _, d in todo if d.certificate_id is None)
        serials = {year: iter(store.next_serials(cur, year, n)) for year, n in wanted.items()}
        out = []
        for number, draft in todo:
            year = draft.date_of_issue.year
            cert = draft.with_id(
                draft.certificate_id
                or regional_number(self.region.code, self.code, year, next(serials[year]))
            )
            out.append((number, draft, cert, Issuance(cert).to_record(), str(uuid.uuid4())))
        return out

    def void(self, cur: Cursor, obj: Mapping[str, Any]) -> str:
        """Void a certificate this node issued (or mark it replaced)."""
        voiding = Voiding.from_json(obj, issuing_participant=self._issuer(), today=self.today())
        state = store.certificate_state(cur, voiding.certificate_id)
        if state is None:
            raise Refusal(
                "UNKNOWN_CERTIFICATE",
                f"certificate_id {voiding.certificate_id} was not issued by this node",
            )
        if state != "ISSUED":
            raise Refusal(
                "NOT_ALLOWED", f"certificate_id {voiding.certificate_id} is already {state.lower()}"
            )
        if voiding.replaced_by and store.certificate_state(cur, voiding.replaced_by) is None:
            raise Refusal(
                "UNKNOWN_CERTIFICATE",
                f"replaced_by {voiding.replaced_by} was not issued by this node: issue it first",
            )
        self._emit(voiding.to_record(), "CertificateVoided", voiding.certificate_id)
        store.void_certificate(cur, voiding)
        return voiding.certificate_id

    def confirm_import(self, cur: Cursor, obj: Mapping[str, Any], book: Mapping[str, str]) -> str:
        """Confirm that a shipment arrived (a regional or a foreign certificate)."""
        # The importing participant is the node's own code, even for a member: the reconciler
        # compares it with the certificate's destination (a member, or the region as a whole).
        confirmation = ImportConfirmation.from_json(obj, importing_participant=self.code)
        refusal = rules.check_import(confirmation, self.code, book, region_code=self.region.code)
        if refusal is not None:
            raise refusal
        event_id = self._emit(
            confirmation.to_record(), "ImportConfirmed", confirmation.certificate_id
        )
        store.insert_confirmation(cur, confirmation, event_id)
        return confirmation.certificate_id

    def declare_production(self, cur: Cursor, obj: Mapping[str, Any]) -> str:
        """Declare a half-year's production of one mine or cooperative."""
        if not self.is_member:
            raise Refusal(
                "NOT_ALLOWED",
                f"{self.code} is a partner: only members declare production to the region",
            )
        declaration = ProductionDeclaration.from_json(obj, participant=self.code)
        refusal = rules.check_production(
            declaration, self.code, members=self.region.member_codes
        ) or declaration_refusal(
            self.code, declaration.producer_id, declaration.period, self._register,
            self.region.policy.registers,
        )  # fmt: skip
        if refusal is not None:
            raise refusal
        subject = f"{declaration.period}/{declaration.producer_id}"
        event_id = self._emit(declaration.to_record(), "ProductionDeclared", subject)
        store.insert_production(cur, declaration, event_id)
        return subject

    def register(self, cur: Cursor, obj: Mapping[str, Any]) -> str:
        """Register (or renew) a mine, cooperative, dealer or exporter of this member (§14)."""
        unknown = sorted(set(obj) - {"entry", "request_id"})
        if unknown:
            raise Refusal(SCHEMA_INVALID, f"{unknown[0]} is not a known field")
        entry = RegisterEntry.from_json(obj.get("entry", None), member=self.code)
        return self._register_event(cur, entry, entry.entry_id)

    def revoke(self, cur: Cursor, obj: Mapping[str, Any]) -> str:
        """Revoke a register entry's licence from its ``effective`` date on (§14)."""
        revocation = Revocation.from_json(obj, member=self.code)
        return self._register_event(cur, revocation, revocation.entry_id)

    def _register_event(
        self, cur: Cursor, payload: RegisterEntry | Revocation, subject: str
    ) -> str:
        refusal = event_refusal(payload, self.code, self._register, self.region.member_codes)
        if refusal is not None:
            raise refusal
        event_id = self._emit(payload.to_record(), payload.EVENT_TYPE, subject)
        register_store.write(cur, [(payload, event_id)])
        apply_event(payload, self._register)
        return subject

    # -- helpers --

    def _issuer(self) -> str:
        """The participant this node speaks for: the region for a member, itself otherwise."""
        return self.region.code if self.is_member else self.code

    def _emit(
        self, record: dict[str, Any], event_type: str, subject: str, event_id: str | None = None
    ) -> str:
        """Queue the operation's event for the end of the chunk; return its id."""
        event_id = event_id or str(uuid.uuid4())
        self._events.append(
            (
                Pending(event_type, record, topology.EVENTS, f"{self.code}.{event_type}", event_id),
                subject,
            )
        )
        return event_id


def _refused(number: int, refusal: Refusal) -> Result:
    return Result(number, False, code=refusal.code, sentence=refusal.sentence)


def _duplicate(number: int, certificate_id: str) -> Result:
    return Result(
        number,
        False,
        code="DUPLICATE_CERTIFICATE",
        sentence=f"certificate_id {certificate_id} was already issued by this node",
    )


def _reject_unknown(op: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(op) - known)
    if unknown:
        raise Refusal(SCHEMA_INVALID, f"{unknown[0]} is not a known field")


def _parse_all(
    lines: list[tuple[int, str | Mapping[str, Any]]], results: dict[int, Result]
) -> list[tuple[int, Mapping[str, Any], str | None]]:
    """Each parsable line with its operation and request_id; the others refused now."""
    parsed = []
    for number, line in lines:
        try:
            op = _parse(line) if isinstance(line, str) else _parsed(line)
            parsed.append((number, op, requests.request_id(op)))
        except Refusal as refusal:
            results[number] = _refused(number, refusal)
    return parsed


def _parsed(op: object) -> Mapping[str, Any]:
    if not isinstance(op, dict):
        raise Refusal(SCHEMA_INVALID, 'the line must be a JSON object with an "op" field')
    return op


def _parse(line: str) -> Mapping[str, Any]:
    if len(line) > MAX_EVENT_BYTES:
        raise Refusal(
            SCHEMA_INVALID,
            f"the line is {len(line):,} characters; an operation may have at most "
            f"{MAX_EVENT_BYTES:,}",
        )
    try:
        op = json.loads(line, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise Refusal(SCHEMA_INVALID, f"the line is not JSON: {exc}") from None
    if not isinstance(op, dict):
        raise Refusal(SCHEMA_INVALID, 'the line must be a JSON object with an "op" field')
    return op
