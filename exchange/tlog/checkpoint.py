"""C2SP ``tlog-checkpoint`` bodies and ``tlog-cosignature`` (Ed25519, ``cosignature/v1``).

A checkpoint body is three lines: the origin (``kpx/<REGION>``), the decimal tree size, the
base64 root hash. A cosignature is a note signature line whose key id uses type 0x04 and
whose bytes are ``key id ‖ u64 big-endian timestamp ‖ Ed25519 signature`` over
``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint body.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.errors import MalformedNote
from exchange.tlog import note
from exchange.tlog.note import Signature, Signer, Verifier, b64, unb64
from exchange.tlog.tree import HASH_SIZE

COSIGNATURE_V1 = 0x04


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: which log, how many leaves, its root."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The note text, final newline included."""
        return f"{self.origin}\n{self.size}\n{b64(self.root)}\n"


def origin_for(region: str) -> str:
    """The log's origin line for a region code (DESIGN §12)."""
    return f"kpx/{region}"


def witness_name(region: str, member: str) -> str:
    """The cosigner key name of a member's node (a note key name: no spaces, no plus)."""
    return f"{origin_for(region)}/witness/{member}"


def parse_body(text: str) -> Checkpoint:
    """Read a checkpoint body (extension lines after the third are allowed and ignored)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise MalformedNote("checkpoint: needs origin, size and root hash lines")
    size_text = lines[1]
    if not size_text.isascii() or not size_text.isdigit() or size_text != str(int(size_text)):
        raise MalformedNote(f"checkpoint: tree size {size_text!r} is no plain decimal")
    root = unb64(lines[2], "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise MalformedNote("checkpoint: root hash is not 32 bytes")
    return Checkpoint(lines[0], int(size_text), root)


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a signed note."""
    return note.sign(cp.body(), [signer])


def open_checkpoint(message: str, log_key: Verifier, origin: str) -> tuple[Checkpoint, note.Note]:
    """Verify a checkpoint note against the log's key and expected origin.

    Raises BadSignature (not signed by ``log_key``) or MalformedNote.
    """
    parsed, _ = note.open_note(message, [log_key])
    cp = parse_body(parsed.text)
    if cp.origin != origin:
        raise MalformedNote(f"checkpoint for origin {cp.origin!r}, expected {origin!r}")
    return cp, parsed


def cosigner_verifier(name: str, public_key: bytes) -> Verifier:
    """A witness's key as a cosignature/v1 verifier."""
    return Verifier(name, COSIGNATURE_V1, public_key)


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs."""
    if not 0 <= timestamp < 2**63:
        raise MalformedNote(f"cosignature timestamp {timestamp} out of range")
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosign(body: str, seed_signer: Signer, timestamp: int) -> Signature:
    """A witness's cosignature line for the checkpoint ``body``."""
    verifier = cosigner_verifier(seed_signer.name, seed_signer.verifier.public_key)
    sig = seed_signer.sign(cosigned_message(body, timestamp))
    return Signature(seed_signer.name, verifier.key_id, timestamp.to_bytes(8, "big") + sig)


def verify_cosignature(body: str, sig: Signature, verifier: Verifier) -> int:
    """Check one cosignature line; returns its timestamp. Raises MalformedNote on mismatch."""
    if sig.name != verifier.name or sig.key_id != verifier.key_id or len(sig.signature) != 72:
        raise MalformedNote(f"cosignature of {sig.name!r} is not by {verifier.name!r}")
    timestamp = int.from_bytes(sig.signature[:8], "big")
    if not verifier.verify(cosigned_message(body, timestamp), sig.signature[8:]):
        raise MalformedNote(f"cosignature of {sig.name!r} does not verify")
    return timestamp


def with_signatures(message: str, extra: list[Signature]) -> str:
    """The note with further signature lines appended (duplicates of a key dropped)."""
    parsed = note.parse(message)
    seen = {(s.name, s.key_id) for s in parsed.signatures}
    lines = list(parsed.signatures)
    for sig in extra:
        if (sig.name, sig.key_id) not in seen:
            seen.add((sig.name, sig.key_id))
            lines.append(sig)
    return note.Note(parsed.text, tuple(lines)).render()
