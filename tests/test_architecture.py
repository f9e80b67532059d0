"""docs/architecture.md stays true: its module map lists every module under its folder."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def _mapped_modules() -> set[str]:
    """``exchange/wire/codec.py``-style paths of every module in the doc's first code block."""
    block = DOC.read_text(encoding="utf-8").split("```")[1]
    stack: list[tuple[int, str]] = []  # (indent, folder) of the folders enclosing a line
    found: set[str] = set()
    for line in block.splitlines():
        match = re.match(r"^( *)([\w./, ]+?)(/|\.py)(\s|$)", line)
        if not match or not line.strip():
            continue
        indent, names, kind = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        prefix = "/".join(folder for _, folder in stack)
        if kind == "/":
            stack.append((indent, names))
            continue
        for name in re.split(r",\s*", names):
            found.add(f"{prefix}/{name.removesuffix('.py')}.py")
    return found


def _modules() -> set[str]:
    return {
        str(path.relative_to(ROOT))
        for package in ("exchange", "nodes")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_the_module_map_lists_every_module_under_its_folder() -> None:
    mapped, real = _mapped_modules(), _modules()
    assert sorted(real - mapped) == [], "modules missing from docs/architecture.md"
    assert sorted(mapped - real) == [], "docs/architecture.md lists modules that do not exist"
