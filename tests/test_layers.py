"""The package's layers (README, "Layout"): a module imports only from its own layer or the ones before it, and
no two modules import each other through any chain. Every import counts, inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vlmtune"

# Lowest first. A module belongs to the first entry that is its name or a package above it.
LAYERS: list[tuple[str, ...]] = [
    (
        "vlmtune",
        "vlmtune.errors",
        "vlmtune.registry",
        "vlmtune.logs",
        "vlmtune.paths",
        "vlmtune.jsonlines",
        "vlmtune.extras",
        "vlmtune.assets",
        "vlmtune.__main__",
    ),
    ("vlmtune.config",),
    ("vlmtune.stats", "vlmtune.metrics"),
    ("vlmtune.data",),
    ("vlmtune.tasks",),
    ("vlmtune.processing",),
    ("vlmtune.models",),
    ("vlmtune.distributed",),
    ("vlmtune.train", "vlmtune.infer"),
    ("vlmtune.memory",),  # uses the vision tower (models) and generation (infer)
    ("vlmtune.build",),
    ("vlmtune.eval", "vlmtune.teacher"),
    ("vlmtune.report",),
    ("vlmtune.memory.experiment",),  # runs evaluations and a comparison report: the one memory module up here
    (
        "vlmtune.rundir",
        "vlmtune.pipeline",
        "vlmtune.smoke",
        "vlmtune.export",
        "vlmtune.serve",
        "vlmtune.ui",
        "vlmtune.track",
        "vlmtune.inspect",
    ),
    ("vlmtune.cli",),
]
# vlmtune/__main__.py only calls the CLI; the CLI package's __init__ imports its verb groups by name.
ALLOWED = {("vlmtune.__main__", "vlmtune.cli")}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best_len:
                best, best_len = i, len(name)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to the README's layer order)"
    return best


def imports_of(path: Path, module: str) -> set[str]:
    """The vlmtune modules `path` imports (resolved to modules that exist, not to attributes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vlmtune")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = (
                    module.split(".")[: -node.level]
                    if not path.name == "__init__.py"
                    else module.split(".")[: len(module.split(".")) - node.level + 1]
                )
                base = ".".join(pkg + ([node.module] if node.module else []))
            if not base.startswith("vlmtune"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if _exists(sub) else base)
    return {_existing(m) for m in found}


def _exists(module: str) -> bool:
    p = ROOT / module.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _existing(module: str) -> str:
    while not _exists(module) and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_upward_imports():
    upward = []
    for mod, deps in graph().items():
        for dep in deps:
            if (mod, dep) in ALLOWED or dep == mod:
                continue
            if layer_of(dep) > layer_of(mod):
                upward.append(f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if dep == node or dep not in g:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a cycle worth failing on.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") or c[0].startswith(m + ".") for m in c)]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_every_module_has_a_layer():
    for mod in graph():
        layer_of(mod)
