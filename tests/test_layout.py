"""The package layout and the public surface (STYLE.md, DESIGN.md: Layout)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import dagvisor
import dagvisor.actors
import dagvisor.errors
import dagvisor.supervisor


def _package_dir(module) -> Path:
    return Path(module.__file__).resolve().parent


def _imported_modules(package_dir: Path) -> set[str]:
    names = set()
    for path in package_dir.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


def test_actors_never_import_the_supervisor_or_the_public_package():
    imported = _imported_modules(_package_dir(dagvisor.actors))
    ours = {name for name in imported if name.split(".")[0] == "dagvisor"}
    assert ours == set(), (
        f"dagvisor.actors must depend on nothing else of dagvisor: {ours}"
    )


def test_the_supervisor_only_imports_the_actors():
    imported = _imported_modules(_package_dir(dagvisor.supervisor))
    ours = {name for name in imported if name.split(".")[0] == "dagvisor"}
    assert ours <= {"dagvisor.actors"}


def test_the_mapped_packages_are_the_repository_folders_or_their_installed_copy():
    # `pytest` and `python -m pytest` must import the same code: the three
    # packages come from one installation, never a mix of the source tree and
    # an installed copy.
    root = _package_dir(dagvisor).parent
    actors, supervisor = (
        _package_dir(dagvisor.actors),
        _package_dir(dagvisor.supervisor),
    )
    if (root / "pyproject.toml").exists():  # the editable install of this repository
        assert actors == root / "actors"
        assert supervisor == root / "supervisor"
    else:  # an installed copy
        assert actors == root / "dagvisor" / "actors"
        assert supervisor == root / "dagvisor" / "supervisor"
    assert (_package_dir(dagvisor) / "py.typed").exists()


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then the rest, each alphabetical (ruff RUF022).
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return (kind, name)


def test_all_is_sorted_and_complete():
    assert dagvisor.__all__ == sorted(dagvisor.__all__, key=_isort_key)
    assert dagvisor.errors.__all__ == sorted(dagvisor.errors.__all__, key=_isort_key)
    for name in dagvisor.__all__:
        assert hasattr(dagvisor, name), name


def test_every_public_name_has_a_docstring():
    missing = []
    for name in dagvisor.__all__:
        obj = getattr(dagvisor, name)
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{name}.{attr}")
    assert missing == []


def test_every_error_derives_from_the_one_root():
    for name in dagvisor.errors.__all__:
        assert issubclass(getattr(dagvisor.errors, name), dagvisor.errors.DagvisorError)
