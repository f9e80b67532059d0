"""A refusal in the officer's words: a translated explanation of each reason code.

The rule's own sentence (English, naming the field and the value) is shown beside it and the
code is kept, so what the officer reads and what a log or the registry says agree.
"""

from __future__ import annotations

from collections.abc import Callable

from exchange.errors import Refusal

EXPLANATIONS: dict[str, str] = {
    "SCHEMA_INVALID": "A value is missing or not in the expected form.",
    "BAD_CERTIFICATE_NUMBER": (
        "This certificate number is not valid: check it character by character."
    ),
    "UNKNOWN_CERTIFICATE": "No certificate with this number is known here.",
    "DUPLICATE_CERTIFICATE": "This certificate number is already used.",
    "NOT_A_PARTICIPANT": "This country is not a Kimberley Process participant in good standing.",
    "PARTICIPANT_SUSPENDED": "This participant is suspended: no trade with it is allowed.",
    "NOT_ALLOWED": "This is not allowed.",
    "INVALID_HS_CODE": "Choose one of the HS codes for rough diamonds.",
    "NON_POSITIVE_QUANTITY": "The quantity must be more than zero.",
    "TOTALS_MISMATCH": "The totals do not match the parcels.",
    "INVALID_DATES": (
        "The dates are not valid: the expiry must follow the date of issue, "
        "within the validity allowed."
    ),
    "ISSUER_MISMATCH": "The issuer does not match this authority.",
}


def explain(gettext: Callable[[str], str], code: str, sentence: str) -> dict[str, str]:
    """What a page shows for a refusal: the explanation, the rule's sentence, the code."""
    words = EXPLANATIONS.get(code, "The operation was refused.")
    return {"code": code, "words": gettext(words), "sentence": sentence}


def explain_refusal(gettext: Callable[[str], str], refusal: Refusal) -> dict[str, str]:
    return explain(gettext, refusal.code, refusal.sentence)
