"""Plain reference paths that production replaced with faster ones; tests compare the two.

``certificate_json`` builds ``Certificate.to_json()`` from a decoded Avro record the obvious
way; the registry stores ``certificate.certificate_json_text`` instead, and
``test_registry_fastpaths`` checks that the text is the canonical dump of this dict.

``text_refusal`` is the screen ``events.payload_from_record`` ran over every decoded record
before its one-pass fast path: the two exact walks (a NUL in any string first, then an
identifier field longer than the bound, each naming the field), which ``events`` keeps for
the sentence; the tests check that the screen with its fast path refuses exactly this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from exchange.domain import events
from exchange.domain.certificate import HsCode
from exchange.domain.events import MAX_IDENTIFIER_LENGTH
from exchange.registry.policy import text_digest

_HS_VALUES = {code.name: code.value for code in HsCode}


def certificate_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """``Certificate.to_json()`` computed straight from the decoded Avro record."""
    return {key: _json_value(key, value) for key, value in record.items()}


def _json_value(key: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _json_value(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(key, v) for v in value]
    if key == "hs_code":
        return _HS_VALUES.get(value, value)
    return value


def content_digest(body: Mapping[str, Any]) -> bytes:
    """The digest of a certificate's JSON dict, through its canonical dump."""
    return text_digest(json.dumps(body, sort_keys=True, separators=(",", ":")))


def text_refusal(record: Mapping[str, Any]) -> str | None:
    """The SCHEMA_INVALID sentence for a record's text, or None: the two exact walks alone
    (a NUL anywhere first, then an overlong identifier), as the screen ran before."""
    if events._holds_nul(record):
        return f"{events._nul_path(record)} holds a NUL character (U+0000)"
    too_long = events._overlong_identifier(record)
    if too_long is None:
        return None
    return (
        f"{too_long[0]} has {too_long[1]:,} characters; an identifier has at most "
        f"{MAX_IDENTIFIER_LENGTH}"
    )
