"""The package's structure (DESIGN.md section 10), checked from the source.

Layers, from the bottom: base rules and types, `store` (every SQL
statement), features (the public rules users call into), `runtime`
(internal: what `tasker run` runs), the app and admin, then the CLI and the
dashboard. A module imports only from its own layer or below, there is no
import cycle (lazy and type-only imports included: a cycle hidden in a
function is still a cycle for a reader), no module is over 400 lines and
at most 25 modules sit directly in `tasker/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tasker"
MAX_LINES = 400
MAX_TOP_LEVEL = 25

BASE = {"exceptions", "defaults", "states", "text", "when", "topics", "schema", "config", "db",
        "retry"}  # fmt: skip
FEATURES = {"msgq", "payload", "context", "outcome", "cron", "limits", "unique", "pipelines",
            "results", "brokers", "provision"}  # fmt: skip
APP = {"app", "admin", "testing", "metrics", "aio", "publishing"}
TOP = {"cli", "web", "contrib", "demo", ""}  # "" is the `tasker` facade itself
LAYERS = ("base", "store", "features", "runtime", "app", "top")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    first = module.split(".")[1] if "." in module else ""
    for name, members in (("base", BASE), ("features", FEATURES), ("app", APP), ("top", TOP)):
        if first in members:
            return LAYERS.index(name)
    if first in ("store", "runtime"):
        return LAYERS.index(first)
    raise AssertionError(f"{module} belongs to no layer: add it to tests/unit/test_layout.py")


def _owner(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> set[str]:
    """The tasker modules `module` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "tasker":
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else _owner(node.module))
        elif isinstance(node, ast.Import):
            found |= {_owner(a.name) for a in node.names if a.name.split(".")[0] == "tasker"}
    found.discard(module)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_import_points_down_or_across() -> None:
    upward = [
        f"{m} ({LAYERS[_layer(m)]}) imports {d} ({LAYERS[_layer(d)]})"
        for m, deps in sorted(GRAPH.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for d in GRAPH[m]:
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            part = []
            while True:
                top = stack.pop()
                part.append(top)
                if top == m:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert cycles == []


def test_module_sizes_and_top_level_count() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
