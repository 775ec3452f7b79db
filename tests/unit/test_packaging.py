"""The wheel holds every package: pyproject.toml lists them by hand (the product's
folders map to ``funcx_flows.*`` names), so a new package folder must be listed
there, or a non-editable install goes without it (an editable one finds it anyway,
which is why nothing else would notice)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_in_the_wheel() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: REPO / path for name, path in setup["package-dir"].items()}
    on_disk = set()
    for top, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(folder).parts
            on_disk.add(".".join((top, *rel)))
    assert on_disk - set(setup["packages"]) == set(), "packages missing in pyproject.toml"
