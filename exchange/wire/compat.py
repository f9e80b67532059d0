"""FULL_TRANSITIVE schema compatibility: the current schemas against every released version.

For each ``schemas/kpx.<Name>.avsc`` and each ``schemas/released/<version>/kpx.<Name>.avsc``,
data written with the old schema must resolve to the new one (old writer -> new reader) and
data written with the new schema must resolve to the old one (new writer -> old reader).

:func:`check_pair` implements the Avro specification's schema-resolution rules as a pure
function over schema JSON (plain or as parsed by fastavro): record names and aliases, fields
added or removed (the reader needs a default for a field the writer lacks), enum symbols (a
writer symbol the reader lacks needs a reader enum default), fixed sizes, the promotions
int -> long -> float -> double and string <-> bytes, unions, and, beyond the spec because
they change the meaning of the bytes, logical types and decimal precision and scale.

Run ``python -m exchange.wire.compat [SCHEMAS_DIR]``: prints every problem, exits 1 if any.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import load_schema

from exchange.wire.codec import default_schemas_dir, released_dirs

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
# writer type -> reader types it may be read as (Avro spec, "Schema Resolution")
PROMOTIONS = {
    "int": ("long", "float", "double"),
    "long": ("float", "double"),
    "float": ("double",),
    "string": ("bytes",),
    "bytes": ("string",),
}


def check_pair(writer: Any, reader: Any) -> list[str]:
    """Problems reading data written with ``writer`` using ``reader``; empty when compatible."""
    ctx = _Context(_names(writer), _names(reader))
    ctx.match(writer, reader, _display_name(reader))
    return ctx.problems


def check_all(schemas_dir: Path | None = None) -> list[str]:
    """Problems of every current schema against every released version, both directions."""
    root = Path(schemas_dir) if schemas_dir is not None else default_schemas_dir()
    problems: list[str] = []
    current = _load_all(root, problems)
    for version_dir in released_dirs(root / "released"):
        for name, old in _load_all(version_dir, problems).items():
            new = current.get(name)
            if new is None:
                problems.append(f"{name}: released in {version_dir.name}, missing from {root}")
                continue
            for p in check_pair(old, new):
                problems.append(f"{name}: {version_dir.name} writer -> current reader: {p}")
            for p in check_pair(new, old):
                problems.append(f"{name}: current writer -> {version_dir.name} reader: {p}")
    return problems


def main(argv: Sequence[str] = ()) -> int:
    """Print every compatibility problem; 1 if there is any, else 0.

    ``argv`` may name the schemas dir; callers such as ``kpx schemas check`` pass nothing, so
    their own command line is never mistaken for ours.
    """
    root = Path(argv[0]) if argv else default_schemas_dir()
    problems = check_all(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} compatibility problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"schemas in {root} are FULL_TRANSITIVE compatible with every released version")
    return 0


@dataclass
class _Context:
    """Named types of both sides, the problems found, and the record pairs already compared."""

    writer_names: dict[str, Any]
    reader_names: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def match(self, writer: Any, reader: Any, path: str) -> None:
        """Append the problems of resolving ``writer`` to ``reader`` at ``path``."""
        w = _deref(writer, self.writer_names)
        r = _deref(reader, self.reader_names)
        if isinstance(r, list):
            self._to_union(w, r, path)
        elif isinstance(w, list):
            for branch in w:  # every branch the writer may use must be readable
                self.match(branch, r, f"{path}<{_kind_label(branch)}>")
        else:
            self._plain(w, r, path)

    def _to_union(self, w: Any, r_branches: list[Any], path: str) -> None:
        w_branches = w if isinstance(w, list) else [w]
        for branch in w_branches:
            wb = _deref(branch, self.writer_names)
            chosen = _best_branch(wb, [_deref(b, self.reader_names) for b in r_branches])
            label = f"{path}<{_kind_label(wb)}>" if isinstance(w, list) else path
            if chosen is None:
                self.problems.append(
                    f"{label}: writer type {_kind_label(wb)} matches no branch of reader union "
                    f"[{', '.join(_kind_label(b) for b in r_branches)}]"
                )
            else:
                self.match(wb, chosen, label)

    def _plain(self, w: Any, r: Any, path: str) -> None:
        wt, rt = _type(w), _type(r)
        if wt != rt and rt not in PROMOTIONS.get(wt, ()):
            self.problems.append(f"{path}: type changed from {wt} to {rt}")
            return
        if wt in NAMED and not _same_name(w, r):
            self.problems.append(
                f"{path}: {wt} name changed from {w['name']} to {r['name']} (and not an alias)"
            )
            return
        self._logical(w, r, path)
        if wt in ("record", "error"):
            self._record(w, r, path)
        elif wt == "enum":
            _enum(w, r, path, self.problems)
        elif wt == "fixed" and w["size"] != r["size"]:
            self.problems.append(f"{path}: fixed size changed from {w['size']} to {r['size']}")
        elif wt == "array":
            self.match(w["items"], r["items"], f"{path}[]")
        elif wt == "map":
            self.match(w["values"], r["values"], f"{path}{{}}")

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> None:
        key = (w["name"], r["name"])
        if key in self.seen:  # recursive types: each pair of records is compared once
            return
        self.seen.add(key)
        written = {f["name"]: f for f in w["fields"]}
        for r_field in r["fields"]:
            names = [r_field["name"], *r_field.get("aliases", [])]
            w_field = next((written[n] for n in names if n in written), None)
            field_path = f"{path}.{r_field['name']}"
            if w_field is not None:
                self.match(w_field["type"], r_field["type"], field_path)
            elif "default" not in r_field:
                self.problems.append(
                    f"{field_path}: reader field has no default and the writer does not have it"
                )

    def _logical(self, w: dict[str, Any] | str, r: dict[str, Any] | str, path: str) -> None:
        wl, rl = _logical_type(w), _logical_type(r)
        if wl != rl:
            self.problems.append(f"{path}: logical type changed from {wl} to {rl}")
        elif wl == "decimal" and isinstance(w, dict) and isinstance(r, dict):
            ws, rs = w.get("scale", 0), r.get("scale", 0)
            if ws != rs:
                self.problems.append(f"{path}: decimal scale changed from {ws} to {rs}")
            if r.get("precision", 0) < w.get("precision", 0):
                self.problems.append(
                    f"{path}: decimal precision narrowed from {w.get('precision')} "
                    f"to {r.get('precision')}"
                )


def _enum(w: dict[str, Any], r: dict[str, Any], path: str, problems: list[str]) -> None:
    missing = [s for s in w["symbols"] if s not in r["symbols"]]
    if missing and r.get("default") not in r["symbols"]:
        problems.append(
            f"{path}: writer symbols {missing} are not in the reader enum {r['name']}, "
            "which has no default"
        )


def _best_branch(w: Any, branches: list[Any]) -> Any | None:
    """The reader branch a writer type resolves to: the first exact match, else a promotion."""
    wt = _type(w)
    for branch in branches:
        if _type(branch) == wt and (wt not in NAMED or _same_name(w, branch)):
            return branch
    for promoted in PROMOTIONS.get(wt, ()):
        for branch in branches:
            if _type(branch) == promoted:
                return branch
    return None


def _same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    """Same unqualified name, or the writer's name is one of the reader's aliases."""
    w_short = _short(w["name"])
    return w_short == _short(r["name"]) or w_short in {_short(a) for a in r.get("aliases", [])}


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _type(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    inner = schema["type"]
    return inner if isinstance(inner, str) else _type(inner)


def _logical_type(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _kind_label(schema: Any) -> str:
    if isinstance(schema, dict) and schema.get("type") in NAMED:
        return _short(str(schema["name"]))
    return schema if isinstance(schema, str) else _type(schema)


def _display_name(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return _short(str(schema["name"]))
    return _type(schema)


def _deref(schema: Any, names: dict[str, Any]) -> Any:
    """A named reference's definition; ``{"type": X}`` wrappers unwrapped to X."""
    while True:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return names.get(schema, names.get(_short(schema), schema))
        inner = schema.get("type") if isinstance(schema, dict) else None
        wrapper = isinstance(inner, dict | list) or (
            isinstance(inner, str) and inner not in PRIMITIVES | NAMED | {"array", "map"}
        )
        if not wrapper:
            return schema
        schema = inner


def _names(schema: Any) -> dict[str, Any]:
    """Every named type defined in ``schema``, by full and by short name."""
    table: dict[str, Any] = {}
    for definition, full_name in _definitions(schema, ""):
        table[full_name] = definition
        table.setdefault(_short(full_name), definition)
    return table


def _definitions(schema: Any, namespace: str) -> Iterator[tuple[dict[str, Any], str]]:
    if isinstance(schema, list):
        for branch in schema:
            yield from _definitions(branch, namespace)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in NAMED:
        name = str(schema["name"])
        space = schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name or not space else f"{space}.{name}"
        yield schema, full
        namespace = space or ""
        for f in schema.get("fields", []):
            yield from _definitions(f["type"], namespace)
    elif kind in ("array", "map"):
        yield from _definitions(schema["items" if kind == "array" else "values"], namespace)
    elif isinstance(kind, dict | list):
        yield from _definitions(kind, namespace)


def _load_all(directory: Path, problems: list[str]) -> dict[str, Any]:
    """Every ``kpx.*.avsc`` in ``directory`` by file stem; an unloadable file is a problem."""
    loaded: dict[str, Any] = {}
    for path in sorted(directory.glob("kpx.*.avsc")):
        try:
            loaded[path.name.removesuffix(".avsc")] = load_schema(str(path))
        except Exception as exc:  # fastavro raises several unrelated types for a bad file
            problems.append(f"{path}: cannot load: {type(exc).__name__}: {exc}")
    return loaded


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
