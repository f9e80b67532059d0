"""The one exception tree of kpx.

Every error kpx raises on purpose derives from :class:`KpxError`, split by what the caller
should do about it::

    KpxError
    ├── TransientError              retry with bounded backoff; the input is fine
    │   ├── BrokerUnavailable       RabbitMQ unreachable, connection or channel lost, blocked
    │   ├── DatabaseUnavailable     PostgreSQL unreachable, connection lost, serialization failure
    │   ├── KeyNotYetKnown          a key id the source of truth does not hold yet (a verifier
    │   │                           downstream of the registry: the key is on its way)
    │   └── LogUnavailable          the registry's public log does not answer over HTTP
    └── PermanentError              never retried: reject, refuse or dead-letter
        ├── ConfigError             a bad or missing setting (names the key)
        ├── CodecError              bytes that are not a kpx Avro message
        │   ├── BadMagic            not Avro single-object encoding (no C3 01 marker)
        │   ├── UnknownFingerprint  a schema fingerprint the store never released
        │   ├── TruncatedMessage    the datum ends early
        │   ├── TrailingBytes       bytes left over after the datum
        │   ├── UndecodableDatum    the datum does not match its writer schema
        │   ├── MessageTooLarge     an event above the size limit of the exchange
        │   └── SchemaViolation     writing a record that does not match its schema
        ├── SignatureError
        │   ├── UnknownKey          no registered key for that key id / producer
        │   └── BadSignature        the signature does not verify
        ├── KeyFileError            a key file that cannot be read
        ├── LogError                the registry's transparency log (DESIGN §12)
        │   ├── MalformedNote       a signed note, checkpoint or key string that does not parse
        │   ├── BadProof            an inclusion or consistency proof that does not verify
        │   └── LogInconsistent     storage or a checkpoint that contradicts a signed checkpoint
        ├── BrokerRefused           the broker refused an operation (access, precondition)
        ├── Refusal                 a business rule refuses an operation or event (carries a
        │                           DESIGN §7 reason code and a sentence)
        ├── NotFound                a certificate, discrepancy or dead letter that does not exist
        ├── ServiceFailed           a service or command kpx started crashed or failed
        └── MalformedTradeFile      an external trade file with a bad row (names line, column)

Adapters translate driver exceptions (pika, psycopg2) into this tree in one place each
(``exchange/adapters/rabbitmq.py``, ``exchange/adapters/postgres.py``), always
``raise Ours(...) from exc``.
"""

from __future__ import annotations


class KpxError(Exception):
    """Root of every error kpx raises on purpose."""


class TransientError(KpxError):
    """A failure that may pass: retry with bounded, jittered backoff."""


class BrokerUnavailable(TransientError):
    """RabbitMQ cannot be reached, or the connection or channel was lost."""


class DatabaseUnavailable(TransientError):
    """PostgreSQL cannot be reached, the connection was lost, or a transaction must be retried."""


class KeyNotYetKnown(TransientError):
    """A key id not registered yet where the verifier looks it up: retry, never dead-letter."""


class LogUnavailable(TransientError):
    """The registry's public log (its portal's ``/log``, or a mirror) does not answer over HTTP:
    no connection, a timeout, or a 5xx / 429 answer, after bounded retries."""


class PermanentError(KpxError):
    """A failure that retrying cannot fix: reject, refuse or dead-letter."""


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names the key."""


class AlreadyRunning(ConfigError):
    """Another instance of the same service (the same member's node) is running."""


class CodecError(PermanentError):
    """Bytes that cannot be read, or a record that cannot be written, as a kpx Avro message."""


class BadMagic(CodecError):
    """The bytes do not start with the Avro single-object marker C3 01."""


class UnknownFingerprint(CodecError):
    """The schema fingerprint is not one the schema store has released."""


class TruncatedMessage(CodecError):
    """The bytes end before the datum does."""


class TrailingBytes(CodecError):
    """Bytes are left over after the datum."""


class UndecodableDatum(CodecError):
    """The datum cannot be decoded with its writer schema."""


class MessageTooLarge(CodecError):
    """An event bigger than the exchange accepts (see exchange.wire.envelope.MAX_EVENT_BYTES)."""


class SchemaViolation(CodecError):
    """A record to write has a missing, unknown or ill-typed field."""


class SignatureError(PermanentError):
    """An envelope's signature cannot be accepted."""


class UnknownKey(SignatureError):
    """No key is registered under that key id for that producer."""


class BadSignature(SignatureError):
    """The signature does not verify over the envelope's fields."""


class KeyFileError(PermanentError):
    """A key file is missing, unreadable or not a kpx key."""


class LogError(PermanentError):
    """The registry's transparency log (DESIGN §12)."""


class MalformedNote(LogError):
    """A signed note, checkpoint, cosignature or key string that does not parse."""


class BadProof(LogError):
    """An inclusion or consistency proof that does not verify against its tree hashes."""


class LogInconsistent(LogError):
    """Storage or a checkpoint that contradicts a checkpoint the log signed (a fork, a rewrite)."""


class BrokerRefused(PermanentError):
    """The broker refused an operation: access refused, or a precondition failed."""


class NotFound(PermanentError):
    """The thing asked for does not exist."""


class ServiceFailed(PermanentError):
    """A service or command that kpx started (e.g. the demo's fleet) crashed or failed."""


class Refusal(PermanentError):
    """A business rule refuses an operation or an event.

    ``code`` is a DESIGN §7 reason code (e.g. ``TOTALS_MISMATCH``); ``sentence`` says what was
    wrong with which field and value, for the person who has to fix it.
    """

    def __init__(self, code: str, sentence: str) -> None:
        super().__init__(f"{code}: {sentence}")
        self.code = code
        self.sentence = sentence


class MalformedTradeFile(PermanentError):
    """An external trade file (``kpx registry import-trade``) with a row that cannot be read.

    ``line`` is the 1-based line of the file (the header is line 1), ``column`` the column's
    name; nothing of the file is kept.
    """

    def __init__(self, message: str, *, line: int = 0, column: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.column = column

    @classmethod
    def at(cls, line: int, column: str, problem: str) -> MalformedTradeFile:
        """The error for ``column`` of ``line``: ``line 7, column qty: must be a number``."""
        return cls(f"line {line}, column {column}: {problem}", line=line, column=column)
