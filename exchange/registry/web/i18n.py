"""English, French and Portuguese for the registry's pages, with Babel.

Messages are English source strings; ``locale/<lang>/LC_MESSAGES/messages.po`` holds the
translations, read with Babel's PO reader once at start (no compile step, so a fresh checkout
serves them). The language is the ``lang`` query parameter or cookie, else the best match of
``Accept-Language``, else English. Numbers and dates are formatted by Babel for that locale.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources

from babel import Locale
from babel.dates import format_date
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LANGUAGES: tuple[str, ...] = ("en", "fr", "pt")
NAMES = {"en": "English", "fr": "Français", "pt": "Português"}


@cache
def catalog(lang: str) -> dict[str, str]:
    """The translations of ``lang`` (empty for English or a message not translated)."""
    if lang == "en":
        return {}
    path = resources.files(__package__).joinpath("locale", lang, "LC_MESSAGES", "messages.po")
    with path.open("rb") as fh:
        po = read_po(fh, locale=lang)
    return {str(m.id): str(m.string) for m in po if m.id and m.string and not m.fuzzy}


@dataclass(frozen=True, slots=True)
class Translator:
    """gettext and formatting for one language."""

    lang: str

    def gettext(self, message: str) -> str:
        return catalog(self.lang).get(message, message)

    def number(self, value: Decimal | int | str | None) -> str:
        if value in (None, ""):
            return ""
        return format_decimal(Decimal(str(value)), format="#,##0.00", locale=self.lang)

    def day(self, value: date | None) -> str:
        return format_date(value, format="medium", locale=self.lang) if value else ""


def choose(query: str | None, cookie: str | None, accept_language: str) -> str:
    """The page's language: explicit choice, then cookie, then the browser's preference."""
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return str(candidate)
    wanted = [part.split(";")[0].strip().replace("-", "_") for part in accept_language.split(",")]
    found = Locale.negotiate([w for w in wanted if w], list(LANGUAGES), sep="_")
    return found.language if found is not None else "en"
