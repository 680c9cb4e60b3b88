"""The package's import graph: no circle, and no arrow from a lower layer up.

Read from the source with `ast` (imports inside functions and under `TYPE_CHECKING` count too),
so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "wyoming_wsrvc"

# Lowest first: a module may import its own layer and the layers below it.
LAYERS = [
    ("audio", "errors", "metrics", "stats"),
    ("text",),
    ("models",),
    ("config",),
    ("engine",),
    ("scheduling",),
    ("server",),
    ("web",),
    ("devtools",),
    ("__main__", "example_voices"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The package modules `path` imports (a `from X import name` counts X, or X.name when that
    is a module)."""
    module = _module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("wyoming_wsrvc")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], node.module or ""])
            else:
                base = node.module or ""
            base = base.rstrip(".")
            if not base.startswith("wyoming_wsrvc"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _exists(sub) else base)
    found.discard(module)
    return found


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # a package's __init__ is imported with any of its modules: not an edge of its own
    return {
        m: {d for d in deps if d in graph and d != "wyoming_wsrvc"} for m, deps in graph.items()
    }


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        if module != "wyoming_wsrvc":
            _layer(module)


def test_no_import_goes_up_a_layer() -> None:
    upward = [
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module != "wyoming_wsrvc"
        for dep in sorted(deps)
        if _layer(dep) > _layer(module)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The graph reader itself: a lazy import inside a function is an edge."""
    source = "def f() -> None:\n    from ..server import handler\n"
    fake = PACKAGE / "models" / "_probe_layers.py"
    try:
        fake.write_text(source)
        assert "wyoming_wsrvc.server.handler" in _imports(fake)
        assert _layer("wyoming_wsrvc.models._probe_layers") < _layer("wyoming_wsrvc.server.handler")
    finally:
        fake.unlink()
