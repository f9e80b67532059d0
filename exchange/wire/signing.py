"""Ed25519 keys, key files, the :class:`Signer` and the :class:`Keyring` that verifies.

Library choice: PyNaCl (libsodium) for everything — key generation, signing, verifying.
The registry's ingest is bounded by signature verification (DESIGN §11), so the verify rate
decides. Measured in the dev venv on this machine (2 cores, 400-byte message, 20 000
operations, three runs, Python 3.11, cryptography 50.0, PyNaCl 1.6):

===================  ===============  ================
library              sign per second  verify per second
===================  ===============  ================
``cryptography``     18.9k – 22.1k    5.8k – 6.9k
PyNaCl               22.2k – 35.1k    12.4k – 12.6k
===================  ===============  ================

PyNaCl verifies about twice as fast, and using it throughout keeps one key type in play
instead of converting between two libraries. Ed25519 is deterministic and standard, so
signatures made here verify with any other Ed25519 implementation (and vice versa).

Key ids are ``<producer>-<YYYYMMDD>-<first 8 hex digits of SHA-256(public key)>``, e.g.
``BW-20261128-3fa1c09e``; a rotated key gets a new id, so old signatures stay verifiable
while the keyring holds the old public key. Key files are JSON::

    <key_id>.key.json  {"kpx_key": 1, "kind": "private", "algorithm": "Ed25519", "key_id",
                        "producer", "created_at", "private_key", "public_key"}   mode 0600
    <key_id>.pub.json  the same without "private_key", "kind": "public"

Keys are unpadded base64url of the raw 32 bytes (as in RFC 8037 JWKs); ``created_at`` is the
UTC instant the key was generated and orders keys made on the same day.

Custody (DESIGN §15): a private key file must be mode 0600 in a folder of mode 0700;
:func:`load_signer` refuses one that its group or others can read (a key that others could
have copied is no proof of who signed), and :func:`private_dir` creates folders 0700 whatever
the umask. The public half travels as one *key line* (:func:`key_line`), what ``kpx node
init`` prints and ``kpx registry keys add --key`` reads: ``<key_id> ed25519:<base64url key>``.
The key id carries the fingerprint of the key, so a mistyped line is caught.

Errors: :class:`~exchange.errors.KeyFileError` for any key file that cannot be read or
written (naming the file), :class:`~exchange.errors.UnknownKey` and
:class:`~exchange.errors.BadSignature` from :meth:`Keyring.verify` (naming the key id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.errors import BadSignature, ConfigError, KeyFileError, UnknownKey

__all__ = [
    "Keyring",
    "Signer",
    "VerifyKey",
    "generate_key",
    "key_line",
    "latest_signer",
    "load_public",
    "load_signer",
    "parse_key_line",
    "private_dir",
    "save_key",
]

FORMAT_VERSION = 1
ALGORITHM = "Ed25519"
PRIVATE_SUFFIX = ".key.json"
PUBLIC_SUFFIX = ".pub.json"
KEY_BYTES = 32

# Producers are participant codes, the region code or "<REGION>-RECONCILER"; restricting them
# to this alphabet also keeps key ids safe to use as file names.
_PRODUCER = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")
_KEY_ID_TAIL = re.compile(r"-(\d{8})-([0-9a-f]{8})")


@dataclass(frozen=True)
class VerifyKey:
    """The public half of a producer's key: verifies that producer's signatures."""

    key_id: str
    producer: str
    public_key: bytes
    created_at: datetime
    # Events it signed on or after this day are refused (a compromised key); None: in force.
    revoked_from: date | None = None
    # ... and, once revoked, any event numbered above the producer's sequence at revocation.
    revoked_above: int | None = None
    _verifier: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parsing the point once here keeps it off the per-message verify path.
        object.__setattr__(self, "_verifier", nacl.signing.VerifyKey(self.public_key))

    def signed_in_force(self, produced_at: datetime, sequence: int | None = None) -> bool:
        """Whether an event (``produced_at``, ``sequence``) was signed before any revocation."""
        if self.revoked_from is None:
            return True
        if produced_at.astimezone(UTC).date() >= self.revoked_from:
            return False
        return self.revoked_above is None or sequence is None or sequence <= self.revoked_above

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``message``; raises BadSignature if it does not verify."""
        try:
            self._verifier.verify(message, signature)
        except nacl.exceptions.CryptoError as exc:
            raise BadSignature(
                f"signature by key id {self.key_id!r} (producer {self.producer!r}) "
                f"does not verify: {exc}"
            ) from exc


@dataclass(frozen=True)
class Signer:
    """A producer's private key; signs messages. Its repr never shows the private key."""

    key_id: str
    producer: str
    created_at: datetime
    _signing_key: nacl.signing.SigningKey = field(repr=False, compare=False)

    @property
    def verify_key(self) -> VerifyKey:
        """The public half, to publish in a ``.pub.json`` file or add to a :class:`Keyring`."""
        return VerifyKey(
            key_id=self.key_id,
            producer=self.producer,
            public_key=bytes(self._signing_key.verify_key),
            created_at=self.created_at,
        )

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return bytes(self._signing_key.sign(message).signature)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (seed); only for writing the key file."""
        return bytes(self._signing_key)


class Keyring:
    """Public keys by key id, each bound to one producer; verifies envelopes' signatures."""

    def __init__(self, keys: list[VerifyKey] | None = None) -> None:
        self._keys: dict[str, VerifyKey] = {}
        for key in keys or ():
            self.add(key)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(self._keys.values())

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)!r})"

    def get(self, key_id: str) -> VerifyKey | None:
        """The key registered under ``key_id``, or None."""
        return self._keys.get(key_id)

    def add(self, key: VerifyKey) -> None:
        """Register ``key``; adding the same key twice is harmless.

        Raises KeyFileError if a different key is already registered under that key id.
        """
        known = self._keys.get(key.key_id)
        if known is not None and (known.public_key, known.producer) != (
            key.public_key,
            key.producer,
        ):
            raise KeyFileError(
                f"key id {key.key_id!r} is already registered with a different public key "
                f"or producer ({known.producer!r}); refusing to replace it"
            )
        self._keys[key.key_id] = key

    def load_dir(self, directory: Path | str) -> int:
        """Add every ``*.pub.json`` in ``directory``; returns how many files were read.

        Raises KeyFileError naming the first file that cannot be read or conflicts.
        """
        paths = _key_files(Path(directory), PUBLIC_SUFFIX)
        for path in paths:
            self.add(load_public(path))
        return len(paths)

    def verify(self, key_id: str, producer: str, message: bytes, signature: bytes) -> None:
        """Check that ``producer``'s key ``key_id`` signed ``message``.

        Raises UnknownKey if the key id is not registered or belongs to another producer (a
        producer must not sign under someone else's key), BadSignature if it does not verify.
        """
        self.key_for(key_id, producer).verify(message, signature)

    def key_for(self, key_id: str, producer: str) -> VerifyKey:
        """``producer``'s key ``key_id``; raises UnknownKey as :meth:`verify` does."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKey(f"key id {key_id!r} (claimed by producer {producer!r}) is unknown")
        if key.producer != producer:
            raise UnknownKey(
                f"key id {key_id!r} belongs to producer {key.producer!r}, not {producer!r}"
            )
        return key


def generate_key(producer: str, *, now: date | None = None) -> Signer:
    """Make a new key for ``producer``; ``now`` (default: today, UTC) dates its key id.

    Raises ConfigError if ``producer`` is not a producer identity (e.g. ``BW``, ``XS``,
    ``XS-RECONCILER``).
    """
    if not _PRODUCER.fullmatch(producer):
        raise ConfigError(
            f"producer {producer!r} is not a producer identity (upper-case letters, digits "
            "and single hyphens, e.g. 'BW' or 'XS-RECONCILER')"
        )
    created_at = datetime.now(UTC)
    signing_key = nacl.signing.SigningKey.generate()
    day = now if now is not None else created_at.date()
    key_id = f"{producer}-{day:%Y%m%d}-{_fingerprint(bytes(signing_key.verify_key))}"
    return Signer(key_id=key_id, producer=producer, created_at=created_at, _signing_key=signing_key)


def save_key(signer: Signer, directory: Path | str) -> tuple[Path, Path]:
    """Write ``signer``'s private (mode 0600) and public key files into ``directory``.

    Returns (private_path, public_path). Never overwrites a key file. Raises KeyFileError
    naming the file that cannot be written.
    """
    folder = private_dir(directory)
    public_doc = _public_document(signer.verify_key)
    private_doc = {**public_doc, "kind": "private", "private_key": _b64(signer.private_bytes())}
    private_path = folder / f"{signer.key_id}{PRIVATE_SUFFIX}"
    public_path = folder / f"{signer.key_id}{PUBLIC_SUFFIX}"
    _write_new(private_path, private_doc, mode=0o600)
    _write_new(public_path, public_doc, mode=0o644)
    return private_path, public_path


def load_signer(path: Path | str) -> Signer:
    """Read a private key file. Raises KeyFileError naming the file and what is wrong,
    including a file or folder its group or others may read (see the module notes)."""
    file = Path(path)
    _check_private(file)
    doc = _read_document(file, kind="private")
    public_key = _key_bytes(file, doc, "public_key")
    private_key = _key_bytes(file, doc, "private_key")
    signing_key = nacl.signing.SigningKey(private_key)
    if bytes(signing_key.verify_key) != public_key:
        raise KeyFileError(f"{file}: public_key does not belong to private_key")
    key_id, producer, created_at = _identity(file, doc, public_key)
    return Signer(key_id=key_id, producer=producer, created_at=created_at, _signing_key=signing_key)


def load_public(path: Path | str) -> VerifyKey:
    """Read a public key file. Raises KeyFileError naming the file and what is wrong."""
    file = Path(path)
    doc = _read_document(file, kind="public")
    public_key = _key_bytes(file, doc, "public_key")
    key_id, producer, created_at = _identity(file, doc, public_key)
    try:
        return VerifyKey(key_id, producer, public_key, created_at)
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(f"{file}: public_key is not an Ed25519 public key: {exc}") from exc


def latest_signer(directory: Path | str, producer: str) -> Signer:
    """The newest private key of ``producer`` in ``directory`` (the one to sign with).

    Newest means the latest key-id date, then the latest ``created_at``. Raises
    KeyFileError if there is none, or if one of that producer's key files is unreadable.
    """
    folder = Path(directory)
    # "XS-*" also matches "XS-RECONCILER-*"; the producer check below sorts them out.
    candidates = [
        signer
        for signer in map(load_signer, _key_files(folder, PRIVATE_SUFFIX, f"{producer}-"))
        if signer.producer == producer
    ]
    if not candidates:
        raise KeyFileError(f"{folder}: no private key of producer {producer!r}")
    return max(candidates, key=lambda s: (_key_id_day(s.key_id), s.created_at, s.key_id))


def private_dir(directory: Path | str) -> Path:
    """Create ``directory`` (and parents) if needed and make it mode 0700, whatever the umask.

    Raises KeyFileError naming the folder when it cannot be created or changed.
    """
    folder = Path(directory)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot create a private (0700) folder: {exc}") from exc
    return folder


def key_line(key: VerifyKey) -> str:
    """The one-line form of a public key: ``<key_id> ed25519:<base64url public key>``."""
    return f"{key.key_id} ed25519:{_b64(key.public_key)}"


def parse_key_line(line: str, *, created_at: datetime | None = None) -> VerifyKey:
    """The public key of a key line; raises KeyFileError saying what is wrong with it."""
    parts = line.strip().split()
    if len(parts) != 2 or not parts[1].startswith("ed25519:"):
        raise KeyFileError(f"key line {line.strip()[:120]!r} is not '<key_id> ed25519:<key>'")
    key_id, encoded = parts[0], parts[1].removeprefix("ed25519:")
    producer = _KEY_ID_TAIL.split(key_id)[0]
    try:
        public_key = _unb64(encoded)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"key line of {key_id!r}: the key is not base64url") from exc
    doc = {"key_id": key_id, "producer": producer, "created_at": "-"}
    if len(public_key) != KEY_BYTES:
        raise KeyFileError(f"key line of {key_id!r}: {len(public_key)} bytes, not {KEY_BYTES}")
    when = created_at or datetime.now(UTC)
    _identity(Path("key line"), {**doc, "created_at": when.isoformat()}, public_key)
    try:
        return VerifyKey(key_id, producer, public_key, when)
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError(f"key line of {key_id!r}: not an Ed25519 public key") from exc


# -- helpers -------------------------------------------------------------------------------


def _check_private(file: Path) -> None:
    """Refuse a private key that others could have read (file or folder open to them)."""
    for path, what in ((file, "key file"), (file.parent, "key folder")):
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read {what}: {exc}") from exc
        if mode & 0o077:
            wanted = "0600" if what == "key file" else "0700"
            raise KeyFileError(
                f"{path}: {what} is mode {mode:04o}, readable by group or others; refusing "
                f"to load a private key that may have been copied (chmod {wanted})"
            )


def _fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:8]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def _key_id_day(key_id: str) -> str:
    match = _KEY_ID_TAIL.search(key_id)
    return match.group(1) if match else ""


def _key_files(folder: Path, suffix: str, prefix: str = "") -> list[Path]:
    try:
        return sorted(folder.glob(f"{prefix}*{suffix}"))
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot list key files: {exc}") from exc


def _public_document(key: VerifyKey) -> dict[str, Any]:
    return {
        "kpx_key": FORMAT_VERSION,
        "kind": "public",
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "producer": key.producer,
        "created_at": key.created_at.isoformat(),
        "public_key": _b64(key.public_key),
    }


def _write_new(path: Path, document: dict[str, Any], *, mode: int) -> None:
    """Write ``document`` to ``path`` atomically, failing if ``path`` already exists.

    The file is created with its final mode, so a private key is never readable by others,
    not even for an instant; the temporary file is linked into place so that a crash leaves
    either no key file or a whole one.
    """
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widened
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temporary, path)
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: key file already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file: {exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def _read_document(file: Path, *, kind: str) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{file}: cannot read key file: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{file}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise KeyFileError(f"{file}: not a kpx key file (expected a JSON object)")
    expected = {"kpx_key": FORMAT_VERSION, "kind": kind, "algorithm": ALGORITHM}
    for name, value in expected.items():
        if doc.get(name) != value:
            raise KeyFileError(f"{file}: {name} is {doc.get(name)!r}, expected {value!r}")
    return doc


def _text_field(file: Path, doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise KeyFileError(f"{file}: {name} is missing or not a string")
    return value


def _key_bytes(file: Path, doc: dict[str, Any], name: str) -> bytes:
    text = _text_field(file, doc, name)
    try:
        raw = _unb64(text)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{file}: {name} is not base64url") from exc
    if len(raw) != KEY_BYTES:
        raise KeyFileError(f"{file}: {name} is {len(raw)} bytes, expected {KEY_BYTES}")
    return raw


def _identity(file: Path, doc: dict[str, Any], public_key: bytes) -> tuple[str, str, datetime]:
    """Key id, producer and creation instant, checked against each other and the key."""
    key_id = _text_field(file, doc, "key_id")
    producer = _text_field(file, doc, "producer")
    if not _PRODUCER.fullmatch(producer):
        raise KeyFileError(f"{file}: producer {producer!r} is not a producer identity")
    tail = _KEY_ID_TAIL.fullmatch(key_id, len(producer))
    if not key_id.startswith(producer) or tail is None:
        expected = f"{producer}-YYYYMMDD-<8 hex digits>"
        raise KeyFileError(f"{file}: key_id {key_id!r} is not {expected!r}")
    if tail.group(2) != _fingerprint(public_key):
        raise KeyFileError(f"{file}: key_id {key_id!r} does not match its public_key")
    return key_id, producer, _created_at(file, doc)


def _created_at(file: Path, doc: dict[str, Any]) -> datetime:
    text = _text_field(file, doc, "created_at")
    try:
        instant = datetime.fromisoformat(text)
    except ValueError as exc:
        raise KeyFileError(f"{file}: created_at {text!r} is not an ISO 8601 instant") from exc
    if instant.tzinfo is None:
        raise KeyFileError(f"{file}: created_at {text!r} has no time zone")
    return instant.astimezone(UTC)
