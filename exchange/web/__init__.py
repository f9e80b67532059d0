"""The shared web foundation of kpx: what the node app and the registry portal both build on.

Nothing here knows about nodes or the registry. ``app.build_app`` assembles a Starlette
application with the security settings of ``security`` (one place), signed session cookies
(``sessions``), per-request translations (``i18n``), RFC 9457 problem details (``problems``)
and autoescaping Jinja2 templates with the shared base layout (``templating``).
"""
