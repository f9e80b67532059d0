"""The broker topology as data: exchanges, quorum queues, bindings, users and permissions.

Pure: it describes, in RabbitMQ's definitions format, what ``kpx region init`` applies through
the management API and what ``kpx topology export`` writes to
``deploy/rabbitmq/definitions.json``, so the two can never drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from typing import Any

_HASHING = "rabbit_password_hashing_sha256"
EVENTS = "kpx.events"
NOTIFY = "kpx.notify"
ACCEPTED = "kpx.accepted"
DEAD = "kpx.dead"
REGISTRY_QUEUE = "kpx.registry"
DEAD_QUEUE = "kpx.registry.dead"
# Nodes set aside unreadable inbox messages here, never on kpx.dead: what is on kpx.dead the
# registry re-injects as its own broker user, so a node must not be able to put anything
# there (forged reasons and routing keys, or just enough to fill it).
NODE_DEAD = "kpx.dead.nodes"
NODE_DEAD_QUEUE = "kpx.nodes.dead"
DEAD_QUEUES = (DEAD_QUEUE, NODE_DEAD_QUEUE)
# The most messages a dead-letter queue holds (a policy, so it can change on a live queue).
# Past it the broker refuses new dead letters: the registry's stay unacknowledged in
# kpx.registry (at-least-once dead-lettering), nothing is dropped. The alert
# DeadLetterQueueFilling fires at 80 % of it.
DEAD_LIMIT = 100_000
RECONCILER_QUEUE = "kpx.reconciler"
# Broker users are global to a broker, not per vhost, so every region's users carry its vhost
# name: two regions (say, production and the demo) on one broker never share a user.

# Redeliveries before a message is dead-lettered. High enough that a database outage (which
# returns batches to the queue when the consumer gives up waiting) never dead-letters a valid
# event; low enough that a message which crashes the consumer is set aside.
DELIVERY_LIMIT = 20


def node_queue(code: str) -> str:
    """The queue a node reads its decisions and notices from."""
    return f"kpx.node.{code}"


def reconciler_producer(region_code: str) -> str:
    """The reconciler's producer and relay identity, ``<REGION>-RECONCILER``."""
    return f"{region_code}-RECONCILER"


def node_user(code: str, vhost: str = "kpx") -> str:
    """The broker user of a node of the region on ``vhost``."""
    return f"{vhost}-{code.lower()}"


def registry_user(vhost: str = "kpx") -> str:
    """The broker user of the registry of the region on ``vhost``."""
    return f"{vhost}-registry"


def reconciler_user(vhost: str = "kpx") -> str:
    """The broker user of the reconciler of the region on ``vhost``."""
    return f"{vhost}-reconciler"


def _quorum(dead_letter: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"x-queue-type": "quorum"}
    if dead_letter:
        args.update(
            {
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-overflow": "reject-publish",
                "x-dead-letter-exchange": DEAD,
                "x-dead-letter-strategy": "at-least-once",
            }
        )
    return args


def _queue(vhost: str, name: str, *, dead_letter: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "durable": True,
        "auto_delete": False,
        "arguments": _quorum(dead_letter),
    }


def _exchange(vhost: str, name: str, kind: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": vhost,
        "type": kind,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


def _binding(vhost: str, source: str, queue: str, key: str) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": key,
        "arguments": {},
    }


def _perm(vhost: str, user: str, configure: str, write: str, read: str) -> dict[str, Any]:
    return {"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read}


def _exact(*names: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` of ``password`` with a 4-byte salt."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(
    vhost: str, node_codes: Sequence[str], admin: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The whole topology for ``vhost`` with one queue and user per node code.

    ``admin`` (user, password hash) adds an administrator: a broker that loads definitions at
    boot creates no default user, and ``kpx region init`` needs one to log in. A little over
    40 lines: the returned dict is the broker's definitions format, kept whole to be read.
    """
    users = [registry_user(vhost), reconciler_user(vhost)]
    users += [node_user(c, vhost) for c in node_codes]
    user_entries = [
        {"name": u, "password_hash": "", "hashing_algorithm": _HASHING, "tags": []} for u in users
    ]
    permissions = _permissions(vhost, node_codes)
    if admin is not None:
        user_entries.append(
            {
                "name": admin[0],
                "password_hash": admin[1],
                "hashing_algorithm": _HASHING,
                "tags": ["administrator"],
            }
        )
        permissions.append(_perm(vhost, admin[0], ".*", ".*", ".*"))
    queues, bindings = _queues_and_bindings(vhost, node_codes)
    return {
        "rabbit_version": "3.10",
        "vhosts": [{"name": vhost}],
        "users": user_entries,
        "permissions": permissions,
        "topic_permissions": _topic_permissions(vhost, node_codes),
        "exchanges": [
            _exchange(vhost, EVENTS, "topic"),
            _exchange(vhost, NOTIFY, "topic"),
            _exchange(vhost, ACCEPTED, "topic"),
            _exchange(vhost, DEAD, "fanout"),
            _exchange(vhost, NODE_DEAD, "fanout"),
        ],
        "queues": queues,
        "bindings": bindings,
        "policies": [dead_letter_policy(vhost)],
    }


def _queues_and_bindings(
    vhost: str, node_codes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    queues = [
        _queue(vhost, REGISTRY_QUEUE),
        _queue(vhost, DEAD_QUEUE, dead_letter=False),
        _queue(vhost, NODE_DEAD_QUEUE, dead_letter=False),
        _queue(vhost, RECONCILER_QUEUE),
    ]
    queues += [_queue(vhost, node_queue(c)) for c in node_codes]
    bindings = [
        _binding(vhost, EVENTS, REGISTRY_QUEUE, "#"),
        _binding(vhost, DEAD, DEAD_QUEUE, ""),
        _binding(vhost, NODE_DEAD, NODE_DEAD_QUEUE, ""),
        _binding(vhost, ACCEPTED, RECONCILER_QUEUE, "#"),
    ]
    bindings += [_binding(vhost, NOTIFY, node_queue(c), f"{c}.#") for c in node_codes]
    return queues, bindings


def _permissions(vhost: str, node_codes: Sequence[str]) -> list[dict[str, Any]]:
    registry, reconciler = registry_user(vhost), reconciler_user(vhost)
    permissions = [
        # The registry re-injects dead letters into kpx.events, hence its write there.
        _perm(
            vhost,
            registry,
            "^$",
            _exact(EVENTS, NOTIFY, ACCEPTED, DEAD),
            _exact(REGISTRY_QUEUE, DEAD_QUEUE),
        ),
        _perm(vhost, reconciler, "^$", _exact(NOTIFY, DEAD), _exact(RECONCILER_QUEUE)),
    ]
    permissions += [
        # kpx.dead.nodes: a node sets aside an unreadable inbox message with its reason.
        _perm(vhost, node_user(c, vhost), "^$", _exact(EVENTS, NODE_DEAD), _exact(node_queue(c)))
        for c in node_codes
    ]
    return permissions


def _topic_permissions(vhost: str, node_codes: Sequence[str]) -> list[dict[str, Any]]:
    """A node may only publish routing keys that start with its own code."""
    return [
        {
            "user": node_user(c, vhost),
            "vhost": vhost,
            "exchange": EVENTS,
            "write": f"^{re.escape(c)}\\.",
            "read": ".*",
        }
        for c in node_codes
    ]


def dead_letter_policy(vhost: str) -> dict[str, Any]:
    """The length limit of the dead-letter queues, as a broker policy."""
    return {
        "vhost": vhost,
        "name": "kpx-dead-letter-limit",
        "pattern": _exact(*DEAD_QUEUES),
        "apply-to": "queues",
        "priority": 0,
        "definition": {"max-length": DEAD_LIMIT, "overflow": "reject-publish"},
    }
