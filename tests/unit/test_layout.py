"""The layout rules, read from the source (nothing is imported or run):
facepipe never imports the services; every service has the same files with
the same roles; no import circles inside a service; main.py is wiring only;
the services are installed under one import name, with an entry point each."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = ROOT / "services"
# The import name the services/ folder is installed as (pyproject.toml).
PACKAGE = "facepipe_services"
SERVICES = sorted(p.name for p in SERVICES_DIR.iterdir() if (p / "__init__.py").is_file())
WITHOUT_STAGE = {"node", "web"}
# The web service serves HTTP, not gRPC: its app.py (the FastAPI application) has the
# servicer's role, and its logic lives in packages (api/, ui/) beside it.
LOGIC_FILE = {"web": "app.py"}
# What main.py may define: it builds the service and runs it, nothing else.
WIRING = {"build", "main"}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def imported_modules(path: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """(level, module, names) of every import statement in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(a.name for a in node.names)))
    return found


def absolute_imports(path: Path) -> set[str]:
    return {module for level, module, _ in imported_modules(path) if level == 0}


def service_graph(service: str) -> dict[str, set[str]]:
    """Module name -> the modules of the same service it imports (``__init__`` for the package)."""
    folder = SERVICES_DIR / service
    modules = {p.stem for p in folder.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        edges: set[str] = set()
        for level, module, names in imported_modules(path):
            if level == 0:
                prefix = f"{PACKAGE}.{service}"
                if module != prefix and not module.startswith(prefix + "."):
                    continue
                parts = module.split(".")[2:]
            elif level == 1:
                parts = module.split(".") if module else []
            else:
                continue  # another service's package: not part of this graph
            if parts:
                edges.add(parts[0])
            else:  # from . import x: x is a module of the service, or a name of __init__
                edges |= {n if n in modules else "__init__" for n in names}
        graph[path.stem] = edges - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_services_are_found() -> None:
    assert SERVICES == [
        "crawler",
        "detector",
        "embedder",
        "extractor",
        "indexer",
        "node",
        "persons",
        "recognizer",
        "web",
    ]


def test_facepipe_never_imports_the_services() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("facepipe")
        for module in absolute_imports(path)
        if module.split(".")[0] in ("services", PACKAGE)
    ]
    assert not offenders, offenders


def test_services_have_one_import_name() -> None:
    """Only ``facepipe_services``: with the repository root on sys.path the folder would
    also import as ``services``, and a module loaded twice keeps two states."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in python_files("facepipe", "services", "tests", "bench")
        for module in absolute_imports(path)
        if module.split(".")[0] == "services"
    ]
    assert not offenders, offenders


def test_services_import_their_own_modules_relatively() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for service in SERVICES
        for path in (SERVICES_DIR / service).glob("*.py")
        for module in absolute_imports(path)
        if module.startswith(f"{PACKAGE}.{service}")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_files(service: str) -> None:
    folder = SERVICES_DIR / service
    expected = {"main.py", LOGIC_FILE.get(service, "servicer.py"), "Dockerfile", "README.md"}
    if service not in WITHOUT_STAGE:
        expected.add("stage.py")
    missing = sorted(name for name in expected if not (folder / name).is_file())
    assert not missing, f"services/{service} lacks {missing}"
    if service in WITHOUT_STAGE:
        assert not (folder / "stage.py").exists(), f"services/{service} has no stage"
    assert not (folder / "consumer.py").exists(), "the stage logic lives in stage.py"


@pytest.mark.parametrize("service", SERVICES)
def test_no_import_cycle_within_a_service(service: str) -> None:
    cycle = find_cycle(service_graph(service))
    assert cycle is None, f"services/{service}: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("service", SERVICES)
def test_only_main_wires_the_servicer_and_nothing_imports_main(service: str) -> None:
    graph = service_graph(service)
    importing_main = sorted(m for m, edges in graph.items() if "main" in edges)
    assert not importing_main, f"services/{service}: {importing_main} import main.py"
    logic = LOGIC_FILE.get(service, "servicer.py").removesuffix(".py")
    importing_servicer = sorted(m for m, edges in graph.items() if logic in edges and m != "main")
    assert not importing_servicer, f"services/{service}: {importing_servicer} import {logic}.py"


@pytest.mark.parametrize("service", SERVICES)
def test_main_is_only_wiring(service: str) -> None:
    tree = ast.parse((SERVICES_DIR / service / "main.py").read_text())
    top_level = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert top_level == WIRING, f"services/{service}/main.py defines {sorted(top_level)}"
    nested = [
        type(n).__name__
        for fn in tree.body
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(fn)
        if n is not fn and isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef)
    ]
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert not nested and not classes, f"services/{service}/main.py defines logic: {nested + classes}"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_service_has_an_entry_point() -> None:
    entry_points = pyproject()["project"]["entry-points"]["facepipe.services"]
    assert entry_points == {name: f"{PACKAGE}.{name}.main:main" for name in SERVICES}


def test_every_package_is_installed() -> None:
    """The renamed services folder needs its packages listed: a new subpackage must be too."""
    setuptools = pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {PACKAGE: "services"}
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for folder in ("facepipe", "services")
        for init in (ROOT / folder).rglob("__init__.py")
    }
    installed = {re.sub(rf"^{PACKAGE}", "services", name) for name in setuptools["packages"]}
    assert installed == on_disk


def test_tests_live_in_their_kind_of_folder() -> None:
    """unit/ runs no server, integration/ real servers, e2e/ the local stack, deploy/ the chart
    and images, docs/ the README: a test file anywhere else is in the wrong place."""
    kinds = {"unit", "integration", "e2e", "deploy", "docs"}
    tests = ROOT / "tests"
    misplaced = [
        p.relative_to(tests).as_posix()
        for p in tests.rglob("test_*.py")
        if p.relative_to(tests).parts[0] not in kinds
    ]
    assert misplaced == []
