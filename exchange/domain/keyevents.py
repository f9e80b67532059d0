"""The key events of DESIGN §15 as payloads, and the pure rule a ``KeyRotated`` must pass.

``KeyRotated`` (node -> registry): a node announces its next signing key, signed with its
current key, so a key rotated while everything runs is learnt from the event itself by every
verifier. ``KeyRevoked`` (registry -> node): the regional body revoked one of the member's
keys from a date (a compromise); the notice tells the member which history stays valid.

A key id is ``<producer>-<YYYYMMDD>-<first 8 hex digits of SHA-256(public key)>`` (see
exchange/wire/signing.py); the rule recomputes the fingerprint, so an announcement can only
name the key it carries, and only for its own producer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar, Self

from exchange.errors import Refusal

KEY_BYTES = 32
_KEY_ID = re.compile(r"(?P<producer>[A-Z0-9]+(?:-[A-Z0-9]+)*)-\d{8}-(?P<fp>[0-9a-f]{8})")


@dataclass(frozen=True, slots=True)
class KeyRotation:
    """KeyRotated: ``participant``'s next key; ``previous_key_id`` signs the announcement."""

    EVENT_TYPE: ClassVar[str] = "KeyRotated"
    participant: str
    key_id: str
    public_key: bytes
    previous_key_id: str
    created_at: datetime

    def to_record(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "previous_key_id": self.previous_key_id,
            "created_at": self.created_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            record["participant"],
            record["key_id"],
            bytes(record["public_key"]),
            record["previous_key_id"],
            record["created_at"],
        )


@dataclass(frozen=True, slots=True)
class KeyRevocation:
    """KeyRevoked: events ``key_id`` signed on or after ``revoked_from`` are refused."""

    EVENT_TYPE: ClassVar[str] = "KeyRevoked"
    participant: str
    key_id: str
    revoked_from: date
    reason: str

    def to_record(self) -> dict[str, Any]:
        return {
            "participant": self.participant,
            "key_id": self.key_id,
            "revoked_from": self.revoked_from,
            "reason": self.reason,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        return cls(
            record["participant"], record["key_id"], record["revoked_from"], record["reason"]
        )


def fingerprint(public_key: bytes) -> str:
    """The 8 hex digits a key id carries for ``public_key``."""
    return hashlib.sha256(public_key).hexdigest()[:8]


def check_rotation(
    rotation: KeyRotation, producer: str, *, node_codes: Collection[str]
) -> Refusal | None:
    """The first refusal for a key announcement: who, which key, and that it is one."""
    if producer not in node_codes or rotation.participant != producer:
        return Refusal(
            "ISSUER_MISMATCH",
            f"participant is {rotation.participant} but it comes from {producer}; a node "
            "announces only its own keys",
        )
    match = _KEY_ID.fullmatch(rotation.key_id)
    if match is None or match.group("producer") != producer:
        return Refusal(
            "SCHEMA_INVALID",
            f"key_id {rotation.key_id[:80]!r} is not '{producer}-YYYYMMDD-<8 hex digits>'",
        )
    if len(rotation.public_key) != KEY_BYTES:
        return Refusal(
            "SCHEMA_INVALID", f"public_key is {len(rotation.public_key)} bytes, not {KEY_BYTES}"
        )
    if match.group("fp") != fingerprint(rotation.public_key):
        return Refusal("SCHEMA_INVALID", f"key_id {rotation.key_id} does not match public_key")
    if rotation.key_id == rotation.previous_key_id:
        return Refusal("NOT_ALLOWED", f"key {rotation.key_id} is already the current key")
    return None
