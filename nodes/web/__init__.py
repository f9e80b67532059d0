"""The national node in a browser and over HTTP (DESIGN §13): ``kpx node serve``.

Pages and API call the node's own operations (``nodes.operations``) and so its rules; this
package adds people (users, roles, tokens), drafts and their authorisation, the audit trail,
the printable certificate, and the pages themselves (one module per page group, templates in
``templates/``). The web machinery (sessions, CSRF, headers, languages) is ``exchange.web``.
"""
