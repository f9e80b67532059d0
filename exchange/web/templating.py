"""Jinja2 templates: autoescape always on, the shared base layout, per-request language.

Autoescaping is on for every template whatever its name, so a certificate field holding
``<script>`` is shown as text. Translations are passed in each request's context (``_``,
``ngettext``), never installed globally, so two requests in two languages never mix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import jinja2
from babel.dates import format_date
from babel.numbers import get_decimal_symbol, get_group_symbol
from starlette.requests import Request
from starlette.responses import HTMLResponse

from exchange.web.i18n import LANGUAGE_NAMES, LANGUAGES


def environment(template_packages: Iterable[str]) -> jinja2.Environment:
    """An environment that finds templates in each package's ``templates/`` then the base's."""
    loaders = [jinja2.PackageLoader(p, "templates") for p in (*template_packages, "exchange.web")]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(languages=LANGUAGES, language_names=LANGUAGE_NAMES)
    return env


@functools.cache
def _separators(lang: str) -> tuple[str, str]:
    return get_group_symbol(lang), get_decimal_symbol(lang)


def _number_formatter(lang: str) -> Callable[..., str]:
    """Amounts as the language writes them (1,234.50 · 1 234,50), fast enough for a page of
    50 rows: Python formats, the locale's separators are swapped in."""
    group, decimal = _separators(lang)

    def number(value: Any, places: int = 2) -> str:
        if value is None or value == "":
            return ""
        try:
            text = f"{Decimal(value):,.{places}f}"
        except (ArithmeticError, ValueError, TypeError):
            return str(value)
        return text.replace(",", "\0").replace(".", decimal).replace("\0", group)

    return number


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """Render ``name`` with the request's language, session, CSRF token and ``context``."""
    env: jinja2.Environment = request.app.state.templates
    translator = request.state.translator
    lang = translator.language
    values: dict[str, Any] = {
        "request": request,
        "_": translator.gettext,
        "ngettext": translator.ngettext,
        "lang": lang,
        "csrf_token": request.state.csrf_token,
        "session": request.scope.get("session", {}),
        "number": _number_formatter(lang),
        "day": lambda value: format_date(value, format="medium", locale=lang) if value else "",
        "app_title": request.app.state.title,
        "nav": request.app.state.nav,
    }
    values.update(context or {})
    return HTMLResponse(env.get_template(name).render(values), status_code=status)
