"""This member's register at its node (DESIGN §14): the rows ``nodes/sql/004_register.sql`` keeps.

The same two tables as the registry's (versions and revocations, one ``register_seq`` for both:
a revocation ends the versions recorded before it), read and written by the same code
(exchange/adapters/registertables.py) into the pure :class:`~exchange.domain.register.Register`
the node's rules check against.

Errors: DatabaseUnavailable (transient) from the adapter.
"""

from __future__ import annotations

from exchange.adapters import registertables
from exchange.adapters.postgres import Cursor
from exchange.adapters.registertables import write
from exchange.domain.register import Register

__all__ = ["load", "write"]


def load(cur: Cursor, member: str) -> Register:
    """The member's register: every version and revocation, in recording order."""
    return registertables.load(cur, [member])
