"""RFC 9457 problem details: every error a kpx API answers is one of these.

``type`` is ``about:blank`` unless a more specific URI is given (the RFC's default, meaning
"the HTTP status says it all"); extra members (``reason``, ``errors``) travel beside the
standard ones.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

MEDIA_TYPE = "application/problem+json"


def problem_body(
    status: int, title: str | None = None, detail: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON object of a problem (``type``, ``title``, ``status``, ``detail`` and extras)."""
    body: dict[str, Any] = {
        "type": extra.pop("type", "about:blank"),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_bytes(status: int, title: str | None = None, detail: str | None = None) -> bytes:
    return json.dumps(problem_body(status, title, detail)).encode()


class ProblemResponse(Response):
    """A JSON problem details answer."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        body = json.dumps(problem_body(status, title, detail, **extra), default=str)
        super().__init__(body.encode(), status_code=status, headers=headers)
