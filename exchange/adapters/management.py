"""RabbitMQ management HTTP API adapter: applies the topology, creates users and vhosts.

``kpx region init`` uses it with the administrator's credentials from ``KPX_AMQP_URL``.
Every call is an idempotent PUT or POST, so init can run again at any time.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from exchange.errors import BrokerRefused, BrokerUnavailable

log = logging.getLogger(__name__)


def management_url(amqp_url: str, override: str | None = None) -> tuple[str, tuple[str, str]]:
    """The management API base URL and admin credentials derived from the AMQP URL."""
    parts = urlsplit(amqp_url)
    auth = (parts.username or "guest", parts.password or "guest")
    if override:
        return override.rstrip("/"), auth
    scheme = "https" if parts.scheme == "amqps" else "http"
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 address such as ::1 keeps its brackets in a URL
        host = f"[{host}]"
    return f"{scheme}://{host}:15672", auth


class Admin:
    """A thin client of the management API; errors translate to BrokerUnavailable/Refused."""

    def __init__(self, amqp_url: str, override: str | None = None) -> None:
        base, auth = management_url(amqp_url, override)
        self._client = httpx.Client(base_url=base + "/api", auth=auth, timeout=30.0)

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.ConnectError as exc:
            raise BrokerUnavailable(
                f"management API {self._client.base_url} {method} {path}: {exc}; is the "
                "management plugin enabled (`rabbitmq-plugins enable rabbitmq_management`)?"
            ) from exc
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(f"management API {method} {path}: {exc}") from exc
        if response.status_code in (401, 403):
            raise BrokerRefused(f"management API {method} {path}: {response.status_code}")
        if response.status_code == 404 and method == "DELETE":
            return None
        if response.status_code >= 400:
            raise BrokerRefused(
                f"management API {method} {path}: {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        """GET a management API path."""
        return self._call("GET", path)

    def put_vhost(self, vhost: str) -> None:
        """Create the vhost if missing."""
        self._call("PUT", f"/vhosts/{quote(vhost, safe='')}", {})

    def delete_vhost(self, vhost: str) -> None:
        """Delete the vhost and everything in it."""
        self._call("DELETE", f"/vhosts/{quote(vhost, safe='')}")

    def put_user(self, name: str, password: str) -> None:
        """Create or update a user with a password and no tags."""
        self._call("PUT", f"/users/{quote(name, safe='')}", {"password": password, "tags": ""})

    def put_user_limit(self, name: str, limit: str, value: int) -> None:
        """Set a per-user limit (``max-connections``, ``max-channels``) of user ``name``."""
        path = f"/user-limits/{quote(name, safe='')}/{quote(limit, safe='')}"
        self._call("PUT", path, {"value": value})

    def apply(self, definitions: dict[str, Any], admin_user: str) -> None:
        """Apply exchanges, queues, bindings, permissions and topic permissions."""
        vhost = definitions["vhosts"][0]["name"]
        v = quote(vhost, safe="")
        self.put_vhost(vhost)
        self._call(
            "PUT",
            f"/permissions/{v}/{quote(admin_user, safe='')}",
            {"configure": ".*", "write": ".*", "read": ".*"},
        )
        for p in definitions["permissions"]:
            body = {k: p[k] for k in ("configure", "write", "read")}
            self._call("PUT", f"/permissions/{v}/{quote(p['user'], safe='')}", body)
        for t in definitions["topic_permissions"]:
            body = {k: t[k] for k in ("exchange", "write", "read")}
            self._call("PUT", f"/topic-permissions/{v}/{quote(t['user'], safe='')}", body)
        for e in definitions["exchanges"]:
            body = {k: e[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")}
            self._call("PUT", f"/exchanges/{v}/{quote(e['name'], safe='')}", body)
        for q in definitions["queues"]:
            body = {k: q[k] for k in ("durable", "auto_delete", "arguments")}
            self._call("PUT", f"/queues/{v}/{quote(q['name'], safe='')}", body)
        for b in definitions["bindings"]:
            self._call(
                "POST",
                f"/bindings/{v}/e/{quote(b['source'], safe='')}/q/"
                f"{quote(b['destination'], safe='')}",
                {"routing_key": b["routing_key"], "arguments": {}},
            )
        for policy in definitions.get("policies", ()):
            body = {k: policy[k] for k in ("pattern", "apply-to", "priority", "definition")}
            self._call("PUT", f"/policies/{v}/{quote(policy['name'], safe='')}", body)
        log.info("applied topology to vhost %r", vhost)

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        """Every queue of the vhost with its message and consumer counts."""
        result: list[dict[str, Any]] = self._call("GET", f"/queues/{quote(vhost, safe='')}")
        return result
