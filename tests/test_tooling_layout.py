"""The benches and the demo live in inspector/tooling/; the product never imports them (the CLI may)."""

from __future__ import annotations

import ast
from pathlib import Path

import inspector

PACKAGE = Path(inspector.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_product_modules_do_not_import_tooling():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tooling" or rel == Path("cli.py"):
            continue
        if any(n == "inspector.tooling" or n.startswith("inspector.tooling.") for n in _imports(path)):
            offenders.append(str(rel))
    assert not offenders, f"product modules importing inspector.tooling: {offenders}"
    for old in ("bench", "watchbench", "stationbench", "demo"):
        assert not (PACKAGE / f"{old}.py").exists() and (PACKAGE / "tooling" / f"{old}.py").exists()


def test_the_parts_of_the_watch_service_never_import_it():
    """service.py ties the watch service's parts together; they never import it (imports point one way)."""
    for name in ("watcher", "openfiles", "intake", "judges", "committer", "archiver", "folderlock"):
        imports = _imports(PACKAGE / f"{name}.py")
        assert not any(n == "inspector.service" or n.startswith("inspector.service.") for n in imports), name
