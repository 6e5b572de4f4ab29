"""Which package may import which (docs/architecture.md), checked over the source.

The engine is the ground floor: `sync_engine` imports none of the others; `resources`
(the ports' adapters and the Salesforce client) builds on the engine only; `sfdc_assets`
and `sensors` are the Dagster layer on top; the emulator is a test double that production
code never imports. The check reads every module's syntax tree, so it also sees imports
inside function bodies (the old code hid its loops there) and `importlib.import_module`
calls with a literal name. It imports nothing it checks. A small AST walk rather than
import-linter: no dependency, the two exceptions (one assembler module, one shared
subpackage) read as code, and a failure names the file, the line and the statement.
"""

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sync_engine", "resources", "sfdc_assets", "sensors", "sfdc_emulator")
# The generated Pub/Sub code is the one piece of `resources` the emulator shares.
PUBSUB_API = "resources.salesforce.pubsub_api"
# The code location's assembler: the one sfdc_assets module that may import sensors.
ASSEMBLER = "sfdc_assets.definitions"


@dataclass(frozen=True)
class Import:
    """One import statement (or literal `import_module` call) of a first-party module."""

    importer: str
    imported: str
    path: Path
    line: int
    statement: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.statement}"


def module_name(path: Path, root: Path = ROOT) -> str:
    """`sync_engine/apply.py` -> `sync_engine.apply`; a package's `__init__` is the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    # A relative import (ruff bans them; resolved anyway so none slips past).
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_in(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import in one file, at any depth (module level, functions, TYPE_CHECKING)."""
    return sorted(_walk_imports(path, root), key=lambda imp: imp.line)


def _walk_imports(path: Path, root: Path) -> Iterator[Import]:
    importer = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        found = _imported_names(node, importer, is_package=path.name == "__init__.py")
        if found is None:
            continue
        names, statement = found
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield Import(importer, name, path, getattr(node, "lineno", 0), statement)


def _imported_names(
    node: ast.AST, importer: str, *, is_package: bool
) -> tuple[list[str], str] | None:
    """(dotted names the node imports, its source form), or None for any other node."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return names, f"import {', '.join(names)}"
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = _resolve(importer, is_package, node.level, node.module)
        # `base.name`, not `base`: `from resources.salesforce import pubsub_api` imports
        # the subpackage, and an allowance for it must match.
        names = [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
        imported = ", ".join(alias.name for alias in node.names)
        return names, f"from {'.' * node.level}{node.module or ''} import {imported}"
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        literal = first.value if isinstance(first, ast.Constant) else None
        if called == "import_module" and isinstance(literal, str):
            return [literal], f"import_module({literal!r})"
    return None


def first_party_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    """Every first-party import in the production packages, in file and line order."""
    found: list[Import] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found.extend(imports_in(path, root))
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def _package(name: str) -> str:
    return name.split(".")[0]


def _violations(package: str, allowed: Callable[[Import], bool]) -> list[str]:
    return _unique(
        imp
        for imp in first_party_imports()
        if _package(imp.importer) == package
        and _package(imp.imported) != package
        and not allowed(imp)
    )


def _unique(imports: Iterable[Import]) -> list[str]:
    # One line per statement, however many names it imports.
    return list(dict.fromkeys(str(imp) for imp in imports))


def _report(violations: list[str]) -> str:
    return "imports against the direction in docs/architecture.md:\n" + "\n".join(violations)


def test_the_scanner_sees_imports_in_function_bodies_and_import_module_calls(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "sfdc_assets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text(
        "import importlib\n"
        "import polars\n"
        "from sync_engine import apply\n"
        "def f():\n"
        "    from sensors.cdc import cdc_sensors\n"
        "    return importlib.import_module('sfdc_emulator.store')\n"
        "from . import keys\n"
    )
    found = [(imp.imported, imp.line) for imp in first_party_imports(tmp_path, ("sfdc_assets",))]
    assert found == [
        ("sync_engine.apply", 3),
        ("sensors.cdc.cdc_sensors", 5),
        ("sfdc_emulator.store", 6),
        ("sfdc_assets.keys", 7),
    ]


def test_sync_engine_imports_no_other_package() -> None:
    violations = _violations("sync_engine", lambda imp: False)
    assert not violations, _report(violations)


def test_resources_import_only_the_engine() -> None:
    violations = _violations("resources", lambda imp: _package(imp.imported) == "sync_engine")
    assert not violations, _report(violations)


def test_sensors_import_only_assets_resources_and_the_engine() -> None:
    allowed = {"sfdc_assets", "resources", "sync_engine"}
    violations = _violations("sensors", lambda imp: _package(imp.imported) in allowed)
    assert not violations, _report(violations)


def test_sfdc_assets_import_sensors_only_from_the_assembler() -> None:
    def allowed(imp: Import) -> bool:
        target = _package(imp.imported)
        if target == "sensors":
            return imp.importer == ASSEMBLER
        return target in {"resources", "sync_engine"}

    violations = _violations("sfdc_assets", allowed)
    assert not violations, _report(violations)


def test_no_production_package_imports_the_emulator() -> None:
    violations = _unique(
        imp
        for imp in first_party_imports()
        if _package(imp.importer) != "sfdc_emulator" and _package(imp.imported) == "sfdc_emulator"
    )
    assert not violations, _report(violations)


def test_the_emulator_imports_only_the_generated_pubsub_code_from_production() -> None:
    violations = _violations("sfdc_emulator", lambda imp: _within(imp.imported, PUBSUB_API))
    assert not violations, _report(violations)


@pytest.mark.parametrize("package", [PUBSUB_API, "resources.salesforce", "resources"])
def test_the_shared_pubsub_code_pulls_in_no_other_production_module(package: str) -> None:
    # The emulator imports the Pub/Sub package, which runs its parents' __init__ too: if
    # either imported production code, the emulator would depend on it after all.
    def in_scope(imp: Import) -> bool:
        if package == PUBSUB_API:
            return _within(imp.importer, PUBSUB_API)
        return imp.importer == package

    violations = _unique(
        imp
        for imp in first_party_imports(packages=("resources",))
        if in_scope(imp) and not _within(imp.imported, PUBSUB_API)
    )
    assert not violations, _report(violations)
