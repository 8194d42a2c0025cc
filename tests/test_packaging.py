"""The package list in pyproject.toml stays in step with the source tree."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    renamed = {v: k for k, v in config["package-dir"].items()}
    found = set()
    inits = [*(ROOT / "netcode").rglob("__init__.py"), ROOT / "demo_game" / "__init__.py"]
    for init in [*inits, ROOT / "tools" / "__init__.py"]:
        rel = init.parent.relative_to(ROOT).as_posix()
        top, _, rest = rel.partition("/")
        top = renamed.get(top, top)
        found.add(".".join([top, *rest.split("/")]) if rest else top)
    assert found == listed


def test_no_bare_tools_package_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "tools" not in config["packages"]
