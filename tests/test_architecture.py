"""The shape of the package: no import cycles (module level and function level alike), and every subpackage
imports only what the README's code map allows."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "fgq"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of ours that ``path`` imports anywhere (also inside functions), with the packages whose
    ``__init__`` the import runs (those that are not the importer's own ancestors)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            if not target.startswith("fgq"):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod in known and mod != name and not name.startswith(mod + "."):
                    out.add(mod)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_walker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# What each part may import (the README's code map). "core" is the per-job modules at the top of ``fgq``.
ALLOWED = {
    "models": set(),
    "metrics": {"models"},  # geometry only
    "data": {"models", "core"},
    "fisher": {"models", "core"},
    "quant": {"models", "fisher", "core"},
    "validation": {"models", "fisher", "quant", "core"},
    "training": {"models", "data", "core"},
    "sweeps": {"core"},
    "core": {"models", "metrics", "data", "fisher", "quant", "validation", "sweeps", "training"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "core"


def test_parts_import_only_what_the_code_map_allows():
    bad = []
    for module, deps in _graph().items():
        part = _part(module)
        for dep in deps:
            other = _part(dep)
            if other != part and other not in ALLOWED[part] and dep != "fgq":
                bad.append(f"{module} → {dep}")
    assert not bad, "imports the code map does not allow: " + ", ".join(sorted(bad))
