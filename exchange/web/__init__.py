"""The shared web foundation of kpx: what the node app and the registry portal both build on.

Nothing here knows about nodes or the registry. ``app.build_app`` assembles a Starlette
application with the security settings of ``security`` (one place), signed session cookies
(``sessions``), per-request translations (``i18n``), RFC 9457 problem details (``problems``)
and autoescaping Jinja2 templates with the shared base layout (``templating``).

A web face in a few lines (``nodes/web/app.py`` is the full example)::

    app = build_app(
        [Route("/", page), Route("/login", login, methods=["POST"]), ...],
        title="kpx · registry",
        secret=secret_bytes,                 # keep it stable across restarts (sessions)
        packages=("exchange.registry.web",),  # its templates/ and locale/<lang>/LC_MESSAGES/*.po
        nav=(("/verify", "Verify"),),         # menu of base.html: path, untranslated label
        state={"registry": ...},              # reachable as request.app.state.registry
    )
    serve(app, host, port)                   # uvicorn; SIGTERM drains and exits 0

A page renders with ``templating.render(request, "x.html", {...})``; its template extends
``base.html`` and calls ``_("…")`` for every text. A POST handler reads its form with
``forms.checked_form(request)`` (403 without the session's CSRF token), and a sign-in with
``auth.check_password`` (rate-limited) then ``auth.begin_session``. API errors: return
``problems.ProblemResponse(status, detail=…)``, or raise Starlette's ``HTTPException`` (a
problem under ``/api/``, the error page elsewhere). Tests: ``tests/support/browser.py``.
"""
