"""The dependency direction of docs/architecture.md: messages -> tenants -> authz, never back."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "authz": {"tenants", "messages", "devissuer"},
    "tenants": {"messages", "devissuer"},
    "ops": {"devissuer"},
    "messages": {"devissuer"},
    "config": {"devissuer"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in the module the import is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_never_imports_what_depends_on_it(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    }

    assert {path: names for path, names in offenders.items() if names} == {}
