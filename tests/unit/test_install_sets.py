"""Install sets (funcx_flows/installsets.py): each set's entry points import nothing
outside the set (its requirements and what they require), checked in a clean
interpreter; and each set's requirements are the plain install's, word for word."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, requires

import pytest

from funcx_flows.installsets import SETS, requirements

ENTRY_MODULES = {
    "sdk": ["funcx_flows.cli", "funcx_flows.taskcli", "funcx_flows.sdk.client",
            "funcx_flows.sdk.executor", "funcx_flows.sdk.stream"],
    "endpoint": ["funcx_flows.endpoint.cli", "funcx_flows.endpoint.daemon",
                 "funcx_flows.endpoint.agent", "funcx_flows.endpoint.interchange",
                 "funcx_flows.endpoint.manager", "funcx_flows.endpoint.worker",
                 "funcx_flows.endpoint.providers.local", "funcx_flows.endpoint.providers.inline",
                 "funcx_flows.endpoint.providers.slurm", "funcx_flows.endpoint.providers.psij",
                 "funcx_flows.sdk.client"],
    "flows": ["funcx_flows.prefect", "funcx_flows.prefect.server", "funcx_flows.sdk.executor"],
}
# imported by a library of the set when they happen to be installed (httpx's HTTP/2,
# Prefect's trio support), never required: a fresh venv of the set runs without them
WHEN_PRESENT = {"h2", "hpack", "hyperframe", "trio", "outcome", "sortedcontainers"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([\w-]+)["']""")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(reqs: list[str]) -> set[str]:
    """The distributions these requirements bring in, transitively (their extras too)."""
    seen: set[str] = set()
    todo = [(m[1], set((m[2] or "[]")[1:-1].split(",")) - {""})
            for r in reqs if (m := _NAME.match(r))]
    while todo:
        name, extras = todo.pop()
        key = _canon(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            deps = requires(name) or []
        except PackageNotFoundError:
            continue
        for dep in deps:
            spec, _, marker = dep.partition(";")
            extra = _EXTRA.search(marker)
            if extra and extra[1] not in extras:
                continue
            if marker.strip() and not extra:
                from packaging.markers import Marker

                if not Marker(marker).evaluate():
                    continue
            m = _NAME.match(spec)
            if m:
                todo.append((m[1], set((m[2] or "[]")[1:-1].split(",")) - {""}))
    return seen


def _imported_distributions(modules: list[str]) -> set[str]:
    code = ("import importlib, json, sys; base = set(sys.modules)\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} - "
            "{n.split('.')[0] for n in base})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    dists = packages_distributions()
    return {_canon(d) for top in json.loads(out.stdout) for d in dists.get(top, [])}


@pytest.mark.parametrize("name", SETS)
def test_a_sets_entry_points_import_nothing_outside_it(name):
    allowed = _closure(requirements(name)) | {"funcx-flows"} | WHEN_PRESENT
    outside = _imported_distributions(ENTRY_MODULES[name]) - allowed
    assert not outside, f"{name} imports {sorted(outside)}, not in its set"


def test_every_set_asks_what_the_plain_install_asks():
    plain = {r for r in requires("funcx-flows") or [] if "extra ==" not in r}
    for name in SETS:
        assert set(requirements(name)) <= plain, name
    assert requirements("endpoint") and not {r for r in requirements("endpoint")
                                             if r.startswith(("prefect", "fastapi",
                                                              "sqlalchemy", "uvicorn"))}
