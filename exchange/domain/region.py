"""The region file (TOML) read once into frozen, typed settings.

Layout (``deploy/region.example.toml`` is the annotated example)::

    [region]            code, name
    [broker]            vhost                       (default "kpx")
    [registry]          database                    (default "kpx_registry"),
                        public_url                  (default "http://127.0.0.1:8400": the base
                                                    of the verify URL in QR codes),
                        publish_statistics          "aggregates" (default: the Annex III
                                                    figures of `kpx stats` on /statistics)
                                                    or "none" (console only)
    [members.BW]        name, authority, database?, broker_user?
    [partners.EU]       name, authority, database?, broker_user?, status?
    [participants]      RU = { name?, status }      other KP participants, no node
    [policy]            grace_days, max_validity_days, gap_timeout_hours, outlier_mad_k,
                        outlier_min_sample, supply_carry_over, registers
    [policy.tolerances] carats_pct, value_pct, parcels, mirror_pct

Members issue regional certificates; partners are KP participants outside the region that run
a node and number their own certificates; other participants run no node but are listed with
their status, because a destination or origin must be a participant in good standing. A node's
``database`` defaults to ``kpx_node_<code>`` and its ``broker_user`` to ``kpx-<code>``
(lower case); policy values default to the example's. Unknown keys are refused so that a
misspelt key is not silently replaced by its default.

The file holds no secrets (broker passwords and signing keys live in the state directory), so
the default ``repr`` is safe; a ``password`` or ``secret`` key is refused with that reason.

Errors: every missing or bad value raises :class:`~exchange.errors.ConfigError` whose message
starts with the key path, e.g. ``members.BW.database must be a string, got 5``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from exchange.errors import ConfigError

STATUSES = ("ADMITTED", "SUSPENDED", "REINSTATED", "WITHDRAWN")
_CODE = re.compile(r"[A-Z]{2}")
# Unquoted PostgreSQL identifier: nothing to escape when `region init` creates the database.
_DATABASE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BROKER_NAME = re.compile(r"[A-Za-z0-9._/-]{1,64}")
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?")
_PUBLISH = re.compile(r"aggregates|none")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8400"
_SECRET_WORDS = ("password", "secret", "private")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """A member or partner that runs a node."""

    code: str
    name: str
    authority: str
    database: str
    broker_user: str
    role: Literal["member", "partner"]
    status: str = "ADMITTED"


@dataclass(frozen=True, slots=True)
class Participant:
    """Another KP participant (no node) and its standing."""

    code: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How far an import confirmation or mirror figure may differ before a discrepancy."""

    carats_pct: Decimal = Decimal("0.5")
    value_pct: Decimal = Decimal("2")
    parcels: int = 0
    mirror_pct: Decimal = Decimal("5")


@dataclass(frozen=True, slots=True)
class Policy:
    """The region's numbers for rules and reconciliation."""

    grace_days: int = 30
    max_validity_days: int = 60
    gap_timeout_hours: int = 24
    outlier_mad_k: float = 3.5
    outlier_min_sample: int = 30
    supply_carry_over: bool = True
    tolerances: Tolerances = Tolerances()
    # DESIGN §14: "enforce" refuses UNLICENSED_EXPORTER / UNREGISTERED_PRODUCER at the node and
    # the registry; "record" accepts and leaves them to `kpx reconcile`.
    registers: str = "record"


@dataclass(frozen=True, slots=True)
class Region:
    """The whole region file, validated."""

    code: str
    name: str
    vhost: str
    registry_database: str
    members: tuple[NodeSettings, ...]
    partners: tuple[NodeSettings, ...]
    participants: tuple[Participant, ...]
    policy: Policy
    public_url: str = DEFAULT_PUBLIC_URL
    publish_statistics: str = "aggregates"

    @property
    def node_codes(self) -> tuple[str, ...]:
        """Members then partners, each in file order."""
        return tuple(n.code for n in (*self.members, *self.partners))

    @property
    def member_codes(self) -> frozenset[str]:
        return frozenset(m.code for m in self.members)

    def is_member(self, code: str) -> bool:
        return code in self.member_codes

    def is_partner(self, code: str) -> bool:
        return any(p.code == code for p in self.partners)

    def node(self, code: str) -> NodeSettings:
        """The member or partner ``code``; ConfigError when it runs no node here."""
        for node in (*self.members, *self.partners):
            if node.code == code:
                return node
        raise ConfigError(f"{code} is neither a member nor a partner of region {self.code}")

    def member_index(self, code: str) -> int:
        """Position of a node in :attr:`node_codes` (metrics port 9410 + index).

        Partners follow the members so that they get ports too. Raises ConfigError.
        """
        return self.node_codes.index(self.node(code).code)

    def participant_status(self, code: str) -> str | None:
        """ADMITTED, SUSPENDED, REINSTATED or WITHDRAWN; None when ``code`` is no participant.

        The region and its members count as admitted: the region is the KP participant and
        its members are its parts, as the EU's member states are.
        """
        return self.book().get(code)

    def book(self) -> dict[str, str]:
        """The participant book (code -> status) as this file states it."""
        book = {self.code: "ADMITTED"}
        book.update((n.code, n.status) for n in (*self.members, *self.partners))
        book.update((p.code, p.status) for p in self.participants)
        return book


class _Table:
    """Typed reads of one TOML table; every ConfigError starts with the key path."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must be a table, got {data!r}")
        self.data: Mapping[str, Any] = data
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.key(name)} {problem}")

    def only(self, *known: str) -> None:
        for name in self.data:
            if any(word in name.lower() for word in _SECRET_WORDS):
                raise self.fail(name, "looks like a secret; secrets live in the state directory")
            if name not in known:
                raise self.fail(name, f"is not a known key (expected one of {', '.join(known)})")

    def table(self, name: str, required: bool = False) -> _Table:
        if name not in self.data and not required:
            return _Table({}, self.key(name))
        return _Table(self._get(name), self.key(name))

    def entries(self) -> Iterator[tuple[str, Any]]:
        for code, value in self.data.items():
            if not _CODE.fullmatch(code):
                raise self.fail(code, "must be a participant code of two capital letters")
            yield code, value

    def string(
        self, name: str, default: str | None = None, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self._get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(name, f"must match {pattern.pattern}, got {value!r}")
        return value

    def integer(self, name: str, default: int, minimum: int) -> int:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(name, f"must be an integer of at least {minimum}, got {value!r}")
        return value

    def number(self, name: str, default: Decimal | float, minimum: float) -> Decimal:
        value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            raise self.fail(name, f"must be a number, got {value!r}")
        number = Decimal(str(value))
        if not number.is_finite() or number < Decimal(str(minimum)):
            raise self.fail(name, f"must be a number of at least {minimum}, got {value!r}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def _get(self, name: str, default: object = None) -> Any:
        if name in self.data:
            return self.data[name]
        if default is None:
            raise self.fail(name, "is missing")
        return default


def load_region(path: str | os.PathLike[str]) -> Region:
    """Read and validate the region file at ``path``. Raises ConfigError."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"region file {os.fspath(path)} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"region file {os.fspath(path)} is not valid TOML: {exc}") from exc
    return parse_region(data)


def parse_region(data: Mapping[str, Any]) -> Region:
    """Validate an already-parsed region file. Raises ConfigError naming the key."""
    root = _Table(data, "")
    root.only("region", "broker", "registry", "members", "partners", "participants", "policy")
    head = root.table("region", required=True)
    head.only("code", "name")
    broker, registry = root.table("broker"), root.table("registry")
    broker.only("vhost")
    registry.only("database", "public_url", "publish_statistics")
    region = Region(
        code=head.string("code", pattern=_CODE),
        name=head.string("name"),
        vhost=broker.string("vhost", "kpx", _BROKER_NAME),
        registry_database=registry.string("database", "kpx_registry", _DATABASE),
        members=_nodes(root.table("members", required=True), "member"),
        partners=_nodes(root.table("partners"), "partner"),
        participants=_participants(root.table("participants")),
        policy=_policy(root.table("policy")),
        public_url=registry.string("public_url", DEFAULT_PUBLIC_URL, _URL).rstrip("/"),
        publish_statistics=registry.string("publish_statistics", "aggregates", _PUBLISH),
    )
    if not region.members:
        raise ConfigError("members must list at least one member")
    _check_unique(region)
    return region


def _nodes(table: _Table, role: Literal["member", "partner"]) -> tuple[NodeSettings, ...]:
    nodes = []
    for code, value in table.entries():
        node = _Table(value, table.key(code))
        # A member's standing is the region's; a partner is a participant in its own right.
        known = ("name", "authority", "database", "broker_user")
        node.only(*known, *(("status",) if role == "partner" else ()))
        status = node.string("status", "ADMITTED") if role == "partner" else "ADMITTED"
        if status not in STATUSES:
            raise node.fail("status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
        nodes.append(
            NodeSettings(
                code=code,
                name=node.string("name"),
                authority=node.string("authority"),
                database=node.string("database", f"kpx_node_{code.lower()}", _DATABASE),
                broker_user=node.string("broker_user", f"kpx-{code.lower()}", _BROKER_NAME),
                role=role,
                status=status,
            )
        )
    return tuple(nodes)


def _participants(table: _Table) -> tuple[Participant, ...]:
    listed = []
    for code, value in table.entries():
        entry = _Table(value, table.key(code))
        entry.only("name", "status")
        status = entry.string("status")
        if status not in STATUSES:
            raise entry.fail("status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
        listed.append(Participant(code, entry.string("name", code), status))
    return tuple(listed)


def _policy(table: _Table) -> Policy:
    d, t = Policy(), Tolerances()
    table.only(
        "grace_days",
        "max_validity_days",
        "gap_timeout_hours",
        "outlier_mad_k",
        "outlier_min_sample",
        "supply_carry_over",
        "tolerances",
        "registers",
    )
    tol = table.table("tolerances")
    tol.only("carats_pct", "value_pct", "parcels", "mirror_pct")
    return Policy(
        grace_days=table.integer("grace_days", d.grace_days, 0),
        max_validity_days=table.integer("max_validity_days", d.max_validity_days, 1),
        gap_timeout_hours=table.integer("gap_timeout_hours", d.gap_timeout_hours, 1),
        # k must be positive; a MAD needs a few points to mean anything.
        outlier_mad_k=float(table.number("outlier_mad_k", d.outlier_mad_k, 0.1)),
        outlier_min_sample=table.integer("outlier_min_sample", d.outlier_min_sample, 3),
        supply_carry_over=table.boolean("supply_carry_over", d.supply_carry_over),
        tolerances=Tolerances(
            carats_pct=tol.number("carats_pct", t.carats_pct, 0),
            value_pct=tol.number("value_pct", t.value_pct, 0),
            parcels=tol.integer("parcels", t.parcels, 0),
            mirror_pct=tol.number("mirror_pct", t.mirror_pct, 0),
        ),
        registers=_registers(table),
    )


def _registers(table: _Table) -> str:
    mode = table.string("registers", Policy().registers)
    if mode not in ("enforce", "record"):
        raise table.fail("registers", f'must be "enforce" or "record", got {mode!r}')
    return mode


def _check_unique(region: Region) -> None:
    """A code, database or broker user named twice would make two parties share one."""
    seen: dict[str, str] = {region.code: "region.code"}
    listed = [(f"{n.role}s.{n.code}", n.code) for n in (*region.members, *region.partners)]
    listed += [(f"participants.{p.code}", p.code) for p in region.participants]
    for key, code in listed:
        if code in seen:
            raise ConfigError(f"{key} is already listed as {seen[code]}")
        seen[code] = key
    for attribute in ("database", "broker_user"):
        used = {region.registry_database: "registry.database"} if attribute == "database" else {}
        for node in (*region.members, *region.partners):
            value = getattr(node, attribute)
            key = f"{node.role}s.{node.code}.{attribute}"
            if value in used:
                raise ConfigError(f"{key} {value!r} is already used by {used[value]}")
            used[value] = key
