"""The architecture's rule that the import contracts (``.importlinter``, run by ``make
lint``) cannot state: no module imports a private name from another package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("oms", "oms_dev")


def _package_of(module: str) -> str:
    """The package a module belongs to for this rule: ``oms.streams.worker`` ->
    ``oms.streams``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Every ``from <other package> import _name`` (or of a private module) under ``root``."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            importer = ".".join(parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                if node.module.split(".")[0] not in packages:
                    continue
                if _package_of(node.module) == _package_of(importer):
                    continue
                where = f"{importer}:{node.lineno}"
                if any(_private(part) for part in node.module.split(".")):
                    found.append(f"{where} imports the private module {node.module}")
                found += [
                    f"{where} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if _private(alias.name)
                ]
    return found


def test_no_module_imports_a_private_name_from_another_package() -> None:
    assert private_imports(ROOT) == []


def test_a_private_name_imported_across_packages_is_found(tmp_path: Path) -> None:
    for package in ("oms/streams", "oms/positions"):
        (tmp_path / package).mkdir(parents=True)
    (tmp_path / "oms/streams/worker.py").write_text("_FaustWorker = object\n")
    (tmp_path / "oms/streams/agent.py").write_text(
        "from oms.streams.worker import _FaustWorker\n"  # same package: allowed
    )
    (tmp_path / "oms/positions/keeper.py").write_text(
        "from oms.streams.worker import _FaustWorker, __all__\n"
    )
    assert private_imports(tmp_path, ("oms",)) == [
        "oms.positions.keeper:1 imports oms.streams.worker._FaustWorker"
    ]
