"""docs/architecture.md stays true: its module map lists every module under its folder."""

from __future__ import annotations

import ast
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


# What each layer folder may import of kpx besides itself and exchange.errors (the doc's rule).
ALLOWED = {
    "domain": set(),
    "wire": set(),
    "adapters": {"domain"},
    "tlog": set(),
    "web": set(),
    "messaging": {"adapters", "domain", "wire"},
    "registry": {"adapters", "domain", "messaging", "tlog", "wire"},
    # exchange/registry/web: the portal, on the web foundation, reads the reconciler's tables
    "registry/web": {
        "adapters",
        "domain",
        "messaging",
        "reconciler",
        "registry",
        "tlog",
        "web",
        "wire",
    },
    "reconciler": {"adapters", "domain", "messaging", "wire"},
    "app": {"adapters", "domain", "messaging", "registry", "tlog", "wire"},
    # the demo reconciles in-process as of its simulated day, after today (kpx reconcile
    # refuses a future day to an operator)
    "demo": {"adapters", "app", "domain", "messaging", "reconciler", "wire"},
    "nodes": {"adapters", "domain", "messaging", "tlog", "wire"},
    "nodes/web": {"adapters", "domain", "messaging", "tlog", "web", "wire", "nodes"},
}
# The command-line faces of the services use the runtime and the exit codes of exchange/app.
COMMAND_FACES = {"exchange/registry/commands.py", "exchange/reconciler/commands.py",
                 "nodes/commands.py", "exchange/registry/logcommands.py",
                 "exchange/registry/web/commands.py", "nodes/web/commands.py",
                 "exchange/registry/keycommands.py", "nodes/keys.py"}  # fmt: skip
NODES_IMPORTERS = {"exchange/app/cli.py", "exchange/demo/commands.py", "exchange/demo/setup.py",
                   "exchange/app/logaudit.py"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    """The kpx layers ``path`` imports (``exchange.<layer>`` or ``nodes``)."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "nodes":
                layers.add("nodes")
            elif parts[0] == "exchange" and len(parts) > 1 and parts[1] != "errors":
                layers.add(parts[1])
    return layers


def test_each_layer_imports_only_the_layers_above_it() -> None:
    wrong = []
    for module in sorted(_modules()):
        parts = module.split("/")
        layer = "nodes" if parts[0] == "nodes" else parts[1]
        if module.startswith("exchange/registry/web/"):
            layer = "registry/web"
        if module.startswith("nodes/web/"):
            layer = "nodes/web"
        if layer.endswith(".py"):
            continue  # exchange/errors.py
        allowed = ALLOWED[layer] | {layer}
        allowed |= {"app"} if module in COMMAND_FACES else set()
        extra = _imports(ROOT / module) - allowed
        if "nodes" in extra and module not in NODES_IMPORTERS:
            wrong.append(f"{module} imports nodes (only the composition roots may)")
        wrong += [f"{module} imports exchange.{x}" for x in sorted(extra - {"nodes"})]
    assert wrong == []
