"""Languages of the web faces: English, French and Portuguese, from gettext catalogues.

The catalogues are the committed ``.po`` files (the foundation's own and each app's, merged);
they are compiled in memory when the app starts, so a clean clone works after ``pip install``
with no build step and no ``.mo`` file to forget. The language of a request is the one the
user chose (kept in the session), else the best match of ``Accept-Language``, else English.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES: tuple[str, ...] = ("en", "fr", "pt")
DEFAULT = "en"
LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "fr": "Français", "pt": "Português"}


def _compile(po: Traversable, locale: str) -> Translations:
    with po.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain="messages")


def load_catalogues(packages: Iterable[str]) -> dict[str, NullTranslations]:
    """One merged translation per language from ``<package>/locale/<lang>/LC_MESSAGES/*.po``.

    Later packages win where two translate the same message (an app may reword the base).
    """
    catalogues: dict[str, NullTranslations] = {DEFAULT: NullTranslations()}
    for lang in LANGUAGES:
        if lang == DEFAULT:
            continue
        merged: Translations | None = None
        for package in ("exchange.web", *packages):
            folder = resources.files(package).joinpath("locale", lang, "LC_MESSAGES")
            if not folder.is_dir():
                continue
            for po in sorted(folder.iterdir(), key=lambda f: f.name):
                if po.name.endswith(".po"):
                    compiled = _compile(po, lang)
                    merged = compiled if merged is None else merged.merge(compiled)
        catalogues[lang] = merged or NullTranslations()
    return catalogues


def negotiate(accept_language: str | None) -> str:
    """The best of :data:`LANGUAGES` for an ``Accept-Language`` header (q-values honoured)."""
    wanted: list[tuple[float, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            wanted.append((-quality + position * 1e-6, tag.strip()))
    for _, tag in sorted(wanted):
        language = _language_of(tag)
        if language in LANGUAGES:
            return language
    return DEFAULT


def _language_of(tag: str) -> str:
    try:
        return Locale.parse(tag.replace("-", "_")).language
    except (ValueError, UnknownLocaleError):
        return tag.split("-")[0].lower()


@dataclass(frozen=True, slots=True)
class Translator:
    """The translation functions of one language, as templates and pages call them."""

    language: str
    translations: NullTranslations

    def gettext(self, message: str, **values: object) -> str:
        text = self.translations.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        text = self.translations.ngettext(singular, plural, n)
        return text % dict(values, n=n)
