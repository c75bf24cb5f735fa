"""The import graph reads top-down (issue 10): each package of ``services``
imports only itself and packages of lower layers, type-only imports
included. A change that needs an arrow upward needs a seam instead."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "services"

#: bottom to top; packages on one layer do not import each other
LAYERS: list[tuple[str, ...]] = [
    ("xmpp",),  # the sans-IO protocol core
    ("platform",),  # leaves: config, databases, metrics, TLS, logging
    ("core",),  # shared types and contracts
    ("storage", "security"),
    ("features",),
    ("router", "presence", "muc", "pubsub"),
    ("edge",),
    ("cluster",),
    ("admin",),
    ("app",),  # composition roots
]
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _imports(path: Path) -> set[str]:
    """The top-level packages of ``services`` that a module imports."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).parts[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                # "from .. import x" names a package of services when it
                # climbs to the top; otherwise the module is the package
                parts = base + node.module.split(".") if node.module else base
                if not parts:
                    parts = [node.names[0].name]
            elif node.module and node.module.startswith("services."):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts:
                out.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("services."):
                    out.add(alias.name.split(".")[1])
    return out


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"proto_gen"} == set(LEVEL), "place new packages in LAYERS"


def test_imports_run_down_the_layers() -> None:
    wrong: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "proto_gen" or len(rel.parts) < 2:
            continue
        own = rel.parts[0]
        for target in sorted(_imports(path) - {own, "proto_gen"}):
            if target not in LEVEL:
                continue
            if LEVEL[target] >= LEVEL[own]:
                wrong.append(f"{rel} imports services.{target}")
    assert not wrong, "imports that do not run down the layers:\n" + "\n".join(wrong)
