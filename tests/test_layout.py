"""The package layout and the public surface (STYLE.md, DESIGN.md: Layout)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import dagvisor
import dagvisor.actors
import dagvisor.errors
import dagvisor.supervisor


def _package_dir(module) -> Path:
    return Path(module.__file__).resolve().parent


_PACKAGES = {
    "actors": "dagvisor.actors",
    "supervisor": "dagvisor.supervisor",
    "dagvisor": "dagvisor",
}


def _module_name(path: Path) -> str:
    package = _PACKAGES[path.parent.name]
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def _imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, wherever the
    import is (top level, under TYPE_CHECKING, inside a function)."""
    name = _module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _project_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (packages and modules)."""
    paths = [
        path
        for folder in (dagvisor.actors, dagvisor.supervisor, dagvisor)
        for path in _package_dir(folder).glob("*.py")
    ]
    names = {_module_name(path) for path in paths} | set(_PACKAGES.values())
    return {
        _module_name(path): {
            target
            for target in _imports_of(path)
            if target in names and target != _module_name(path)
        }
        for path in paths
    }


def _imported_modules(package_dir: Path) -> set[str]:
    graph = _project_graph()
    package = _PACKAGES[package_dir.name]
    return {
        target
        for name, targets in graph.items()
        if name == package or name.startswith(package + ".")
        for target in targets
    }


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


def _outside(package: str, imported: set[str]) -> set[str]:
    return {
        name
        for name in imported
        if name != package and not name.startswith(package + ".")
    }


def test_actors_never_import_the_supervisor_or_the_public_package():
    imported = _imported_modules(_package_dir(dagvisor.actors))
    ours = _outside("dagvisor.actors", imported)
    assert ours == set(), (
        f"dagvisor.actors must depend on nothing else of dagvisor: {ours}"
    )


def test_the_supervisor_only_imports_the_actors():
    imported = _imported_modules(_package_dir(dagvisor.supervisor))
    others = _outside("dagvisor.supervisor", imported)
    assert _outside("dagvisor.actors", others) == set()


def test_a_relative_import_out_of_a_package_is_seen(tmp_path):
    folder = tmp_path / "actors"
    folder.mkdir()
    (folder / "_bad.py").write_text("from ..supervisor import _graph\n")
    assert "dagvisor.supervisor" in _imports_of(folder / "_bad.py")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, iteratively."""
    cycles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_imports_itself_back_type_checking_imports_counted():
    # A cycle says two modules are one concern, or that a third is missing.
    graph = _project_graph()
    for package in _PACKAGES.values():  # a package's __init__ only re-exports
        graph.pop(package, None)
        for targets in graph.values():
            targets.discard(package)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_public_surface_is_the_listed_one():
    # tests/public_surface.txt is the contract: a name added to or taken from
    # the public surface is a decision, made in that file too.
    listed = (Path(__file__).parent / "public_surface.txt").read_text().split()
    public = {f"dagvisor.{name}" for name in dagvisor.__all__} | {
        f"dagvisor.errors.{name}" for name in dagvisor.errors.__all__
    }
    assert sorted(public) == listed


def test_the_subpackages_export_only_what_dagvisor_exports():
    public = set(dagvisor.__all__) | set(dagvisor.errors.__all__)
    for package in (dagvisor.actors, dagvisor.supervisor):
        exported = {
            name
            for name, value in vars(package).items()
            if not name.startswith("_") and not inspect.ismodule(value)
        }
        assert exported <= public, (package.__name__, exported - public)


_KNOWN = {
    # Builtins, typing and the standard library a signature may name.
    *("Any", "None", "bool", "int", "float", "str", "bytes", "bytearray", "object"),
    *("memoryview",),
    *("list", "dict", "tuple", "set", "frozenset", "type", "Literal", "Final"),
    *("Mapping", "Sequence", "Iterator", "Iterable", "AsyncIterator", "Callable"),
    *("Awaitable", "TracebackType", "MappingProxyType", "Path", "PathLike", "os"),
    *("AbstractAsyncContextManager", "T", "R", "trio", "CancelScope", "Nursery"),
    *("Self", "TypeVar", "ExceptionGroup", "BaseException", "Exception", "NoReturn"),
}


def test_every_type_a_public_method_returns_is_public():
    public = set(dagvisor.__all__) | set(dagvisor.errors.__all__)
    unknown = []
    for name in dagvisor.__all__:
        owner = getattr(dagvisor, name)
        members = (
            [
                (attr, member)
                for attr, member in vars(owner).items()
                if not attr.startswith("_")
            ]
            if inspect.isclass(owner)
            else [(name, owner)]
        )
        for attr, member in members:
            target = member.fget if isinstance(member, property) else member
            if not callable(target):
                continue
            returned = getattr(target, "__annotations__", {}).get("return")
            if not isinstance(returned, str):
                continue
            unknown.extend(
                f"{name}.{attr} -> {word}"
                for word in re.findall(r"[A-Za-z_]\w*", returned)
                if word not in public and word not in _KNOWN
            )
    assert unknown == []
