"""Certificate numbers: ISO 7064 MOD 97-10 check digits, regional and foreign formats.

A regional number is ``<REGION>-<MEMBER>-<YYYY>-<7-digit serial>-<2 check digits>``, e.g.
``XS-BW-2026-0000001-03`` (DESIGN §3). The check digits are computed as IBAN does: drop the
hyphens, turn letters into numbers (A=10 … Z=35), append ``00`` and take ``98 - (n mod 97)``.
A number whose converted digits are ≡ 1 (mod 97) is well-formed, so any single substitution
of a digit by a digit or a letter by a letter, and any swap of two adjacent digits, is caught
before a lookup. Substitutions across classes (a letter where a digit belongs) and swaps
across a hyphen are caught by the format, which is why :func:`parse_regional` checks both.

Certificates of participants outside the region keep their own numbers: they only have to
start with the issuer's alpha-2 code and be 1–40 characters of ``A-Z 0-9 - /``.

Errors: :class:`~exchange.errors.Refusal` with code ``BAD_CERTIFICATE_NUMBER``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from exchange.errors import Refusal

BAD_NUMBER = "BAD_CERTIFICATE_NUMBER"
SERIAL_DIGITS = 7
MAX_SERIAL = 10**SERIAL_DIGITS - 1

_REGIONAL = re.compile(r"([A-Z]{2})-([A-Z]{2})-(\d{4})-(\d{7})-(\d{2})")
_FOREIGN = re.compile(r"[A-Z0-9/-]{1,40}")
_ALNUM = re.compile(r"[A-Z0-9]+")
_CODE = re.compile(r"[A-Z]{2}")
_LETTER_DIGITS = {ord(c): str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


@dataclass(frozen=True, slots=True)
class RegionalNumber:
    """The parts of a well-formed regional certificate number."""

    region: str
    member: str
    year: int
    serial: int


def _as_digits(chars: str) -> int:
    """Convert ``A-Z 0-9`` to the MOD 97-10 integer (A=10 … Z=35); ValueError otherwise."""
    if not _ALNUM.fullmatch(chars):
        raise ValueError(f"{chars!r} is not made of A-Z and 0-9")
    # The ISO 7064 table: 0-9 stay, A-Z become 10-35 (what int(c, 36) gives), in one
    # translate: a conversion per character cost more than the rest of the number check.
    return int(chars.translate(_LETTER_DIGITS))


def check_digits(body: str) -> str:
    """The two MOD 97-10 check digits for ``body`` (hyphens are ignored).

    Raises ValueError when ``body`` holds anything but ``A-Z``, ``0-9`` and hyphens.
    """
    n = _as_digits(body.replace("-", "")) * 100
    return f"{98 - n % 97:02d}"


def is_well_formed(number: str) -> bool:
    """True when ``number`` (hyphens ignored, letters converted) is ≡ 1 (mod 97)."""
    try:
        return _as_digits(number.replace("-", "")) % 97 == 1
    except ValueError:
        return False


def regional_number(region: str, member: str, year: int, serial: int) -> str:
    """The regional number with its check digits, e.g. ``XS-BW-2026-0000001-03``.

    Raises Refusal(BAD_CERTIFICATE_NUMBER) when a part does not fit the format (a serial past
    9 999 999, a year outside 1000–9999, a code that is not two capital letters).
    """
    for field, code in (("region", region), ("member", member)):
        if not _CODE.fullmatch(code):
            raise Refusal(BAD_NUMBER, f"{field} must be two capital letters, got {code!r}")
    if not 1000 <= year <= 9999:
        raise Refusal(BAD_NUMBER, f"year must have four digits, got {year}")
    if not 1 <= serial <= MAX_SERIAL:
        raise Refusal(BAD_NUMBER, f"serial must be 1 to {MAX_SERIAL}, got {serial}")
    body = f"{region}-{member}-{year:04d}-{serial:0{SERIAL_DIGITS}d}"
    return f"{body}-{check_digits(body)}"


def parse_regional(number: str, region: str) -> RegionalNumber:
    """Split a regional number of ``region`` into its parts after checking format and digits.

    Raises Refusal(BAD_CERTIFICATE_NUMBER) naming what is wrong: the format, the region
    prefix, or the check digits.
    """
    match = _REGIONAL.fullmatch(number)
    if match is None:
        raise Refusal(
            BAD_NUMBER,
            f"certificate_id {number!r} is not of the form "
            f"{region}-<MEMBER>-<YYYY>-<7-digit serial>-<2 check digits>",
        )
    prefix, member, year, serial, digits = match.groups()
    if prefix != region:
        raise Refusal(
            BAD_NUMBER, f"certificate_id {number} starts with {prefix}, not the region {region}"
        )
    if not is_well_formed(number):
        expected = check_digits(number[: -len(digits) - 1])
        raise Refusal(
            BAD_NUMBER,
            f"certificate_id {number} has check digits {digits} but its body gives {expected}"
            " (a mistyped number?)",
        )
    return RegionalNumber(region=prefix, member=member, year=int(year), serial=int(serial))


def check_foreign(number: str, issuer: str) -> Refusal | None:
    """Refuse a partner's own number unless it starts with ``issuer``: 1–40 of A-Z 0-9 - /."""
    if not _FOREIGN.fullmatch(number):
        return Refusal(
            BAD_NUMBER,
            f"certificate_id {number!r} must be 1 to 40 characters of A-Z, 0-9, '-' and '/'",
        )
    if not number.startswith(issuer):
        return Refusal(
            BAD_NUMBER,
            f"certificate_id {number} must start with the issuer's code {issuer}",
        )
    return None
