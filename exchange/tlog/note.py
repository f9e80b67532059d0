"""C2SP ``signed-note`` with Ed25519 keys, after golang/mod ``sumdb/note/note.go``.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key id ‖ signature)>``. The key id is the first four bytes of
SHA-256(key name ‖ 0x0A ‖ type ‖ public key); type 0x01 is an Ed25519 signature over the text.
Verifier keys are written ``<name>+<8 hex key id>+<base64(type ‖ public key)>``, signer keys
``PRIVATE+KEY+<name>+<8 hex key id>+<base64(type ‖ seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from exchange.errors import BadSignature, MalformedNote

ED25519 = 0x01
SIG_PREFIX = "— "  # U+2014 EM DASH, then a space
MAX_SIGNATURES = 100  # the spec's floor for what a verifier must accept


def key_id(name: str, key_type: int, public_key: bytes) -> int:
    """SHA-256(name ‖ 0x0A ‖ type ‖ key)[:4] as an unsigned big-endian integer."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no plus sign, no control character."""
    return bool(name) and not any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name)


def b64(data: bytes) -> str:
    """Standard base64 with padding, as the formats require."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Strict standard base64; raises MalformedNote naming ``what``."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedNote(f"{what}: not base64: {text!r}") from exc


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that checks one key name's signatures."""

    name: str
    key_type: int
    public_key: bytes

    @property
    def key_id(self) -> int:
        """The 32-bit key id its signature lines carry."""
        return key_id(self.name, self.key_type, self.public_key)

    def __str__(self) -> str:
        encoded = b64(bytes([self.key_type]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's Ed25519 signature of ``message``."""
        try:
            VerifyKey(self.public_key).verify(message, signature)
        except (BadSignatureError, ValueError):
            return False
        return True


def parse_verifier(vkey: str, key_type: int = ED25519) -> Verifier:
    """Parse ``<name>+<hex id>+<base64 key>``; raises MalformedNote unless exact."""
    name, hex_id, encoded = _three_parts(vkey, vkey)
    key = unb64(encoded, "verifier key")
    if len(key) != 33 or key[0] != key_type:
        raise MalformedNote(f"verifier key {vkey!r}: not a type {key_type:#04x} Ed25519 key")
    verifier = Verifier(name, key_type, key[1:])
    if hex_id != f"{verifier.key_id:08x}":
        raise MalformedNote(f"verifier key {vkey!r}: key id does not match its name and key")
    return verifier


def _three_parts(key: str, shown: str) -> tuple[str, str, str]:
    parts = key.split("+", 2)  # base64 may hold a plus sign; the name and the id never do
    if len(parts) != 3 or not valid_name(parts[0]) or len(parts[1]) != 8:
        raise MalformedNote(f"key {shown!r}: not <name>+<8 hex>+<base64>")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class Signer:
    """An Ed25519 private key under a key name."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        if not valid_name(self.name) or len(self.seed) != 32:
            raise MalformedNote(f"signer {self.name!r}: a key name and a 32-byte seed")

    @property
    def verifier(self) -> Verifier:
        """Its public half."""
        public = bytes(SigningKey(self.seed).verify_key)
        return Verifier(self.name, ED25519, public)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return SigningKey(self.seed).sign(message).signature

    def __str__(self) -> str:
        encoded = b64(bytes([ED25519]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id:08x}+{encoded}"

    def __repr__(self) -> str:
        return f"Signer({self.name!r}, <redacted>)"


def parse_signer(skey: str) -> Signer:
    """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64 seed>``; raises MalformedNote."""
    prefix = "PRIVATE+KEY+"
    if not skey.startswith(prefix):
        raise MalformedNote("signer key: must start with PRIVATE+KEY+")
    name, hex_id, encoded = _three_parts(skey[len(prefix) :], "PRIVATE+KEY+…")
    key = unb64(encoded, "signer key")
    if len(key) != 33 or key[0] != ED25519:
        raise MalformedNote("signer key: not an Ed25519 key")
    signer = Signer(name, key[1:])
    if hex_id != f"{signer.verifier.key_id:08x}":
        raise MalformedNote("signer key: key id does not match its name and key")
    return signer


def generate_signer(name: str) -> Signer:
    """A new random key under ``name``."""
    return Signer(name, bytes(SigningKey.generate()))


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: who, under which key id, the signature bytes after the id."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        """The line, newline included."""
        raw = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIG_PREFIX}{self.name} {b64(raw)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed note: its text (final newline included) and its signature lines."""

    text: str
    signatures: tuple[Signature, ...]

    def render(self) -> str:
        """The note as bytes travel: text, blank line, signature lines."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def sign(text: str, signers: Iterable[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) with each signer; returns the note."""
    _check_text(text)
    message = text.encode()
    sigs = tuple(Signature(s.name, s.verifier.key_id, s.sign(message)) for s in signers)
    return Note(text, sigs).render()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text must end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise MalformedNote("note text holds a control character")


def parse(message: str) -> Note:
    """Split a note into text and signatures, verifying nothing; raises MalformedNote."""
    split = message.rfind("\n\n")
    if split < 0 or not message.endswith("\n"):
        raise MalformedNote("not a signed note: no blank line before the signatures")
    text = message[: split + 1]
    _check_text(text)
    lines = message[split + 2 :].splitlines(keepends=True)
    if not lines or len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"a signed note needs 1 to {MAX_SIGNATURES} signature lines")
    return Note(text, tuple(signature_line(line) for line in lines))


def signature_line(line: str) -> Signature:
    """Parse one ``— <name> <base64>`` line (newline included); raises MalformedNote."""
    if not line.startswith(SIG_PREFIX) or not line.endswith("\n"):
        raise MalformedNote(f"malformed signature line {line!r}")
    name, _, encoded = line[len(SIG_PREFIX) : -1].partition(" ")
    raw = unb64(encoded, f"signature of {name!r}")
    if not valid_name(name) or len(raw) < 5:
        raise MalformedNote(f"malformed signature line {line!r}")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def open_note(message: str, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse and verify; returns the note and the known keys that signed it.

    Raises MalformedNote, or BadSignature when a known key's signature fails or no known key
    signed (lines of unknown keys are ignored, as the spec asks).
    """
    note = parse(message)
    known = {(v.name, v.key_id): v for v in verifiers}
    good: list[Verifier] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(note.text.encode(), sig.signature):
            raise BadSignature(f"note signature of {sig.name!r} does not verify")
        good.append(verifier)
    if not good:
        raise BadSignature("note is signed by no known key")
    return note, good
