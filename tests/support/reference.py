"""Plain reference paths that production replaced with faster ones; tests compare the two.

``certificate_json`` builds ``Certificate.to_json()`` from a decoded Avro record the obvious
way; the registry stores ``certificate.certificate_json_text`` instead, and
``test_registry_fastpaths`` checks that the text is the canonical dump of this dict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from exchange.domain.certificate import HsCode
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
