"""The wheel ships every package and the Lua scripts: an install from another folder runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True, timeout=300)
    [built] = list(out.glob("iou_gateway-*.whl"))
    return built


def test_wheel_ships_every_script_and_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {p.name for p in (ROOT / "lua").glob("*.lua")}
    assert "_lib.lua" in scripts and "charge.lua" in scripts
    assert {f"gateway/lua/{s}" for s in scripts} <= names
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "gateway").rglob("__init__.py")}
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    assert not any(n.startswith(("tests/", "loadtests/")) for n in names)


def test_installed_wheel_loads_its_scripts(wheel: Path, tmp_path: Path) -> None:
    """Unpacked away from the checkout, the package finds the scripts beside its modules."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (f"import sys; sys.path.insert(0, {str(site)!r})\n"
            "from gateway.store.scripts import SCRIPT_NAMES, load_script, lua_dir\n"
            "print(lua_dir())\n"
            "assert all(load_script(n).source for n in SCRIPT_NAMES)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(site / "gateway" / "lua")
