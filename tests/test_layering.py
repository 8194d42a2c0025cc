"""The layering rules of ARCHITECTURE.md, enforced."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PURE_LAYERS = ["netcode.wire", "netcode.core", "netcode.replication"]
FORBIDDEN = ["asyncio", "aiortc", "aioice", "aiohttp", "pygame"]


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_io(layer: str) -> None:
    """Importing a pure layer (in a fresh interpreter) must not load any IO library."""
    code = (
        f"import sys, importlib; importlib.import_module({layer!r}); "
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{layer} imported {out.stdout.strip()}"


def _python_files(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package.replace(".", "/")).rglob("*.py"))


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_read_no_clock_and_no_unseeded_randomness(layer: str) -> None:
    bad = []
    for path in _python_files(layer):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
                if node.value.id in ("time", "datetime") or (
                    name.startswith("random.") and (node.attr not in ("Random",))
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
            if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import")
    assert bad == []


# the benchmarks that measure aiortc itself, beside netcode's use of it
_BARE_AIORTC_BENCHMARKS = ("tools/bench_transport.py", "tools/bench_floor.py")


def test_only_transport_touches_aiortc_and_aiohttp_and_only_demo_touches_pygame() -> None:
    bad = []
    for path in sorted((ROOT / "netcode").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            for name in names:
                if (
                    name in ("aiortc", "aioice", "aiohttp")
                    and not rel.startswith("netcode/transport/")
                    and rel not in _BARE_AIORTC_BENCHMARKS
                ):
                    bad.append(f"{rel}:{node.lineno}: {name}")
                if name == "pygame":
                    bad.append(f"{rel}:{node.lineno}: pygame")
    assert bad == []


def test_every_public_name_is_importable_from_netcode() -> None:
    import netcode

    for name in netcode.__all__:
        assert getattr(netcode, name) is not None, name


def test_importing_netcode_alone_loads_no_io() -> None:
    code = f"import sys, netcode; print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
