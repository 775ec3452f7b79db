"""DESIGN.md's import rules, checked two ways: statically over the source and by
importing the light modules in a clean interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "funcx_flows.service": ROOT / "service",
    "funcx_flows.endpoint": ROOT / "endpoint",
    "funcx_flows.triggers": ROOT / "triggers",
}
# (importer prefix, forbidden import prefixes)
RULES = [
    ("funcx_flows.service", ("funcx_flows.endpoint", "funcx_flows.triggers",
                             "funcx_flows.prefect", "funcx_flows.sdk", "prefect")),
    ("funcx_flows.endpoint", ("funcx_flows.service", "funcx_flows.triggers",
                              "funcx_flows.prefect", "prefect", "fastapi", "sqlalchemy")),
    ("funcx_flows.triggers", ("funcx_flows.service", "funcx_flows.endpoint")),
    # storage sits under the API and the dispatcher: it hands them rows, not records
    ("funcx_flows.service.store", ("funcx_flows.service.api", "funcx_flows.service.dispatcher",
                                   "funcx_flows.service.hub", "fastapi")),
]
# Process main modules of the endpoint start on compute nodes: lighter still.
LIGHT_ENDPOINT_MODULES = ["agent", "interchange", "manager", "worker"]
HEAVY = ("prefect", "fastapi", "sqlalchemy", "httpx", "starlette", "uvicorn")


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"  # its own name is its package's
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.rsplit(".", node.level - is_package)[0] \
                    if node.level - is_package else module
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return found


def _modules(package: str, folder: Path):
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join([package, *parts]), path


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    top = next(p for p in FOLDERS if package == p or package.startswith(p + "."))
    folder = FOLDERS[top].joinpath(*package[len(top) + 1:].split(".")) if package != top \
        else FOLDERS[top]
    for module, path in _modules(package, folder):
        for name in _imports(path, module):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{module} imports {name}")
    return out


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_imports_run_one_way(package, forbidden):
    assert _violations(package, forbidden) == []


def test_core_modules_import_no_part():
    parts = ("funcx_flows.service", "funcx_flows.endpoint", "funcx_flows.triggers",
             "funcx_flows.prefect", "funcx_flows.sdk", "prefect", "fastapi", "sqlalchemy")
    bad = []
    for name in ("errors", "messages", "serialize", "retry", "home"):
        path = ROOT / "funcx_flows" / f"{name}.py"
        for imp in _imports(path, f"funcx_flows.{name}"):
            if any(imp == p or imp.startswith(p + ".") for p in parts):
                bad.append(f"funcx_flows.{name} imports {imp}")
    assert bad == []


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(out.stdout.split())


def test_endpoint_processes_start_light():
    mods = [f"funcx_flows.endpoint.{m}" for m in LIGHT_ENDPOINT_MODULES
            if (ROOT / "endpoint" / f"{m}.py").exists()]
    assert mods, "the endpoint's process modules are missing"
    loaded = _loaded_after("; ".join(f"import {m}" for m in mods))
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_import_funcx_flows_does_not_import_prefect():
    loaded = _loaded_after("import funcx_flows, funcx_flows.errors, funcx_flows.serialize")
    assert "prefect" not in loaded and "httpx" not in loaded
