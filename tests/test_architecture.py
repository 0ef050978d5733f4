"""The layering of docs/architecture.md, checked on the source: a core that imports nothing above
it, middle layers in one order, no two modules importing each other, modules of a readable size
and the package's own imports at module top (so the dependency graph is what the file heads say).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "aniportraitgan"

# Top-level parts of the package by layer; a part may import its own layer's core members and any
# lower layer. Above the core, parts of one layer do not import each other.
CORE = {
    "aniportraitgan", "errors", "atomic", "images", "configs", "frames", "rotations", "camera_checks",
    "cameras", "crops", "render", "body", "data", "latents", "generator", "artefacts", "signals",
}
LAYERS = [
    CORE,
    {"facerecon"},
    {"training", "inference"},
    {"metrics"},
    {"animation"},
    {"frontend"},
    {"inversion"},
    {"webapp"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
MAX_LINES = 430  # "about 400": a module past this holds more than one concept
# Imports inside functions that are deliberate: optional heavy dependencies are imported lazily by
# their own wrappers, so only the package's modules are listed here (none today).
LAZY_ALLOWED: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at module top, line) for each import of the package's own modules."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` or try/except count as top-level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "aniportraitgan":
                resolved = _resolve(target)
                if resolved and resolved != module:
                    out.append((resolved, id(node) in top_level, node.lineno))
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"package part {part!r} is in no layer of tests/test_architecture.py: add it")


def test_every_part_has_a_layer():
    for module in MODULES:
        _layer(_part(module))


def test_no_part_imports_a_higher_layer():
    bad = []
    for module, imports in GRAPH.items():
        src = _part(module)
        for target, _, line in imports:
            dst = _part(target)
            if dst == src:
                continue
            ls, ld = _layer(src), _layer(dst)
            if ld > ls or (ld == ls and ls > 0):
                bad.append(f"{module}:{line} imports {target} ({src} is layer {ls}, {dst} layer {ld})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_two_modules_import_each_other():
    edges = {m: {t for t, _, _ in imports} for m, imports in GRAPH.items()}
    pairs = sorted({tuple(sorted((a, b))) for a, ts in edges.items() for b in ts if a in edges.get(b, ())})
    # a package's __init__ re-exporting its members is not a cycle of concepts
    pairs = [(a, b) for a, b in pairs if not (b.startswith(a + ".") or a.startswith(b + "."))]
    assert not pairs, f"modules importing each other: {pairs}"


def test_own_imports_at_module_top():
    lazy = [f"{m}:{line} imports {t} inside a function"
            for m, imports in GRAPH.items() for t, top, line in imports
            if not top and (m, t) not in LAZY_ALLOWED]
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (> {MAX_LINES}): split it by concept"
