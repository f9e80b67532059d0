"""Jinja2 templates: autoescape always on, the shared base layout, per-request language.

Autoescaping is on for every template whatever its name, so a certificate field holding
``<script>`` is shown as text. Translations are passed in each request's context (``_``,
``ngettext``), never installed globally, so two requests in two languages never mix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jinja2
from babel.dates import format_date
from babel.numbers import format_decimal
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
        "number": lambda value, places=2: format_decimal(
            value, format="#,##0." + "0" * places if places else "#,##0", locale=lang
        ),
        "day": lambda value: format_date(value, format="medium", locale=lang) if value else "",
        "app_title": request.app.state.title,
        "nav": request.app.state.nav,
    }
    values.update(context or {})
    return HTMLResponse(env.get_template(name).render(values), status_code=status)
