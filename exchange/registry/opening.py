"""Opening one delivery: decode the envelope, authenticate its producer, verify, decode payload.

The authenticated producer is the broker user in the AMQP ``user_id`` property, which the
broker checks against the connection's user: a node's user (``kpx-bw``) means that node. A
message the registry itself re-injected from the dead-letter queue carries the registry's
user; its envelope's producer then counts, proven by the signature alone.

Outcomes, from the outside in (DESIGN §7 codes):

- bytes that are no envelope: dead-lettered (SCHEMA_UNKNOWN for an unknown fingerprint,
  SCHEMA_INVALID otherwise), a rejection recorded and answered;
- a broker user that is no node of the region: UNKNOWN_PRODUCER;
- an envelope producer other than the authenticated one, an unknown key, a key of another
  producer, a signature that does not verify: BAD_SIGNATURE;
- a payload with an unknown fingerprint: SCHEMA_UNKNOWN; one that does not decode:
  SCHEMA_INVALID — after the signature verified, so the event is authentic and its sequence
  number counts.

Unauthentic messages are keyed by a digest of their bytes, never by the id they claim, so a
forged or corrupted copy cannot make the genuine event look like a duplicate.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from exchange.adapters.rabbitmq import Delivery
from exchange.domain import rules
from exchange.domain.events import EVENT_TYPES, Issuance, Payload, payload_from_record
from exchange.errors import (
    CodecError,
    MessageTooLarge,
    Refusal,
    SignatureError,
    UnknownFingerprint,
)
from exchange.registry.policy import Event, certificate_text, text_digest
from exchange.registry.preverify import AheadVerifier
from exchange.wire.codec import SchemaStore, is_canonical_uuid
from exchange.wire.envelope import MAX_EVENT_BYTES, Envelope, VerifiesEvents, open_envelope
from exchange.wire.keyring import RefreshingKeyring

_DIGEST_NAMESPACE = uuid.UUID("6f1c0d2e-8b1a-4f5e-9a43-6b7f0c2d9e51")


@dataclass(frozen=True, slots=True)
class Opened:
    """One delivery after opening: an authentic event, or why it is refused before policy."""

    delivery: Delivery
    key: str  # event_log primary key
    claimed_id: str  # the id the sender knows it by: subject_event_id of the decision
    event_type: str
    producer: str  # authenticated, else claimed, else "unknown"
    recipient: str | None  # who gets the decision (a node), if anyone
    authentic: bool  # signature verified: the sequence number counts
    sequence: int | None = None
    produced_at: datetime | None = None
    event: Event | None = None
    refusal: Refusal | None = None
    dead: bool = False  # not an envelope at all: goes to the dead-letter queue

    @property
    def certificate_id(self) -> str | None:
        """The certificate concerned, when the payload was decoded."""
        return None if self.event is None else self.event.certificate_id


def digest_key(body: bytes) -> str:
    """A UUID determined by the bytes: the event_log key of an unauthentic message."""
    return str(uuid.uuid5(_DIGEST_NAMESPACE, hashlib.sha256(body).hexdigest()))


def _as_uuid(text: object) -> str | None:
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        return None


# The registered keys, refreshed from the key table when a message names a key id they do not
# hold (a key rotated in after start) and every second (a revocation): exchange/wire/keyring.py.
KeySource = RefreshingKeyring


class Opener:
    """Turns deliveries into :class:`Opened` items; pure apart from the key reload."""

    def __init__(
        self,
        store: SchemaStore,
        keys: KeySource,
        users: Mapping[str, str],
        node_codes: Collection[str],
        registry_user: str,
        ahead: AheadVerifier | None = None,
    ) -> None:
        self.store, self.keys = store, keys
        self.users = dict(users)  # broker user -> node code
        self.node_codes = frozenset(node_codes)
        self.registry_user = registry_user
        self.ahead = ahead  # signatures verified ahead in a helper process, if any
        self._verifier: VerifiesEvents = keys if ahead is None else _AheadKeys(keys, ahead)

    def look_ahead(self, deliveries: Sequence[Delivery]) -> None:
        """Start verifying a batch's signatures in the helper (see exchange/registry/preverify.py)
        before its deliveries are opened one by one."""
        if self.ahead is not None:
            keys = {key.key_id: key.public_key for key in self.keys}
            self.ahead.start([d.body for d in deliveries], keys)

    def close(self) -> None:
        """Stop the helper, if there is one."""
        if self.ahead is not None:
            self.ahead.close()

    def open(self, delivery: Delivery) -> Opened:
        """Open one delivery; never raises for bad input (only for a bug)."""
        user = delivery.properties.user_id
        auth = self.users.get(user) if user else None
        if len(delivery.body) > MAX_EVENT_BYTES:
            size = MessageTooLarge(
                f"{len(delivery.body):,} bytes, above the limit of {MAX_EVENT_BYTES:,}"
            )
            return self._dead(delivery, auth, size)
        try:
            _, env = self.store.decode(delivery.body, expected="Envelope")
        except CodecError as exc:
            return self._dead(delivery, auth, exc)
        claimed = str(env["producer"])
        producer = claimed if user == self.registry_user else auth
        if producer is None or producer not in self.node_codes:
            sender = f"broker user {user!r}" if user else "a message without user_id"
            why = f"{sender} (envelope producer {claimed!r}) is no node of the region"
            return self._refused(delivery, env, producer, Refusal("UNKNOWN_PRODUCER", why))
        if claimed != producer:
            # repr: a claimed producer is untrusted text (a NUL in it would fail the insert)
            why = f"envelope producer {claimed!r} but published by {user!r} of {producer}"
            return self._refused(delivery, env, producer, Refusal("BAD_SIGNATURE", why))
        return self._verified(delivery, env, producer)

    def reopen(self, body: bytes) -> Event:
        """An event verified earlier (a held void), decoded again from its stored bytes.

        Raises CodecError or Refusal only if the schema store lost a schema it had.
        """
        _, env = self.store.decode(body, expected="Envelope")
        _, record = self.store.decode(env["payload"])
        payload = payload_from_record(env["event_type"], record)
        return make_event(
            str(env["event_id"]),
            env["event_type"],
            env["producer"],
            env["sequence"],
            env["produced_at"],
            payload,
            record,
            body,
            env["payload"],
        )

    def _refused(
        self, delivery: Delivery, env: Mapping[str, Any], producer: str | None, refusal: Refusal
    ) -> Opened:
        """A decoded envelope refused before (or by) its signature: keyed by its bytes."""
        key = digest_key(delivery.body)
        return Opened(
            delivery=delivery,
            key=key,
            claimed_id=_as_uuid(env["event_id"]) or key,
            event_type=str(env["event_type"]),
            producer=producer or "unknown",
            recipient=producer if producer in self.node_codes else None,
            authentic=False,
            sequence=int(env["sequence"]),
            produced_at=env["produced_at"],
            refusal=refusal,
        )

    def _verified(self, delivery: Delivery, env: Mapping[str, Any], producer: str) -> Opened:
        """Verify and decode an authenticated envelope.

        Over 40 lines: one readable sequence of checks, each ending in its own refusal.
        """
        body = delivery.body
        try:
            envelope = open_envelope(self.store, self._verifier, body, decoded=env)
            self.keys.check_in_force(envelope.key_id, envelope.produced_at, envelope.sequence)
        except SignatureError as exc:
            return self._refused(delivery, env, producer, Refusal("BAD_SIGNATURE", str(exc)))
        except CodecError as exc:
            code = "SCHEMA_UNKNOWN" if isinstance(exc, UnknownFingerprint) else "SCHEMA_INVALID"
            return self._authentic(delivery, env, producer, Refusal(code, f"payload: {exc}"))
        if not is_canonical_uuid(envelope.event_id):
            # The event log is keyed by uuid: another spelling would fail the whole batch.
            why = f"event_id {envelope.event_id[:80]!r} is no UUID in canonical lower-case form"
            return self._authentic(delivery, env, producer, Refusal("SCHEMA_INVALID", why))
        payload = _payload(envelope)
        if isinstance(payload, Refusal):
            return self._authentic(delivery, env, producer, payload)
        event = make_event(
            envelope.event_id,
            envelope.event_type,
            envelope.producer,
            envelope.sequence,
            envelope.produced_at,
            payload,
            envelope.payload,
            body,
            env["payload"],
        )
        # The digest key of the bytes is computed only on the refusal paths: an authentic
        # event is keyed by its own id, and hashing every body cost ~40 us an event. The id
        # is canonical (checked above), so it is also the id its sender knows it by.
        return Opened(
            delivery=delivery,
            key=event.event_id,
            claimed_id=event.event_id,
            event_type=str(env["event_type"]),
            producer=producer,
            recipient=producer,
            authentic=True,
            sequence=int(env["sequence"]),
            produced_at=env["produced_at"],
            event=event,
        )

    def _authentic(
        self, delivery: Delivery, env: Mapping[str, Any], producer: str, refusal: Refusal
    ) -> Opened:
        """An event whose signature verified but whose payload cannot be used."""
        refused = self._refused(delivery, env, producer, refusal)
        return replace(refused, key=refused.claimed_id, authentic=True)

    def _dead(self, delivery: Delivery, auth: str | None, exc: CodecError) -> Opened:
        code = "SCHEMA_UNKNOWN" if isinstance(exc, UnknownFingerprint) else "SCHEMA_INVALID"
        props = delivery.properties
        key = digest_key(delivery.body)
        kind = props.type if props.type in EVENT_TYPES else "UNKNOWN"
        return Opened(
            delivery=delivery,
            key=key,
            claimed_id=_as_uuid(props.message_id) or key,
            event_type=kind,
            producer=auth or "unknown",
            recipient=auth if auth in self.node_codes else None,
            authentic=False,
            refusal=Refusal(code, f"not a kpx envelope: {exc}"),
            dead=True,
        )


class _AheadKeys:
    """The registered keys, taking the helper's word for the very bytes it verified: the
    same key lookup and the same errors as verifying in line."""

    def __init__(self, keys: KeySource, ahead: AheadVerifier) -> None:
        self.keys, self.ahead = keys, ahead

    def verify(self, key_id: str, producer: str, message: bytes, signature: bytes) -> None:
        key = self.keys.key_for(key_id, producer)
        if not self.ahead.verified(key.public_key, message, signature):
            key.verify(message, signature)


def _check_announcement(event_type: str, record: Mapping[str, Any], key_id: str) -> None:
    """A KeyRotated must be signed by the key it names as previous: Refusal(BAD_SIGNATURE).

    The signature itself verified (the event is authentic and its sequence counts); it only
    says the wrong thing about which key made it.
    """
    if event_type == "KeyRotated" and record.get("previous_key_id") != key_id:
        raise Refusal(
            "BAD_SIGNATURE",
            f"KeyRotated names previous_key_id {str(record.get('previous_key_id'))[:80]!r} "
            f"but is signed with {key_id!r}",
        )


def make_event(
    event_id: str,
    event_type: str,
    producer: str,
    sequence: int,
    produced_at: datetime,
    payload: Payload,
    record: dict[str, Any],
    body: bytes,
    encoded: bytes = b"",
) -> Event:
    """An Event; a certificate's JSON body and digest are computed once, here. ``encoded``
    is the payload's single-object bytes as received."""
    cert_text, digest = None, b""
    if isinstance(payload, Issuance):
        cert_text = certificate_text(record["certificate"])
        digest = text_digest(cert_text)
    return Event(
        event_id,
        event_type,
        producer,
        sequence,
        produced_at,
        payload,
        body,
        record,
        cert_text,
        digest,
        encoded,
    )


def _payload(envelope: Envelope) -> Any | Refusal:
    """The envelope's payload as its domain class, or the refusal of an implausible one."""
    late = rules.check_instant("produced_at", envelope.produced_at)
    if late is not None:
        return late
    try:
        _check_announcement(envelope.event_type, envelope.payload, envelope.key_id)
        return payload_from_record(envelope.event_type, envelope.payload)
    except Refusal as refusal:
        return refusal
    except (KeyError, TypeError, ValueError) as exc:
        return Refusal("SCHEMA_INVALID", f"payload: {exc!r}")
