"""The built wheel ships every module of the source tree (a package setuptools does not find
installs fine in editable mode and breaks only for users of a real ``pip install``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _source_modules() -> set[str]:
    """Wheel paths the source tree should produce: hubtune/ as is, plugins/<pkg>/ at the top level."""
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "hubtune").rglob("*.py")}
    for plugin in (ROOT / "plugins").iterdir():
        if (plugin / "__init__.py").exists():
            modules |= {path.relative_to(ROOT / "plugins").as_posix() for path in plugin.rglob("*.py")}
    return {module for module in modules if "__pycache__" not in module}


@pytest.mark.slow
def test_wheel_ships_every_module(tmp_path: Path) -> None:
    # built from a copy: setuptools reuses a build/ folder in the tree, whose stale modules (moved or
    # deleted since) would otherwise ship too
    source = tmp_path / "source"
    for name in ("hubtune", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("hubtune-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    missing = _source_modules() - shipped
    assert not missing, f"modules the wheel leaves out (see [tool.setuptools.packages.find]): {sorted(missing)}"
    assert not shipped - _source_modules(), f"modules the wheel ships that the tree lacks: {sorted(shipped - _source_modules())}"
    assert not [name for name in shipped if name.startswith(("plugins/", "tests/"))]  # no top-level plugins or tests
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert all(f"{name} = hubtune_{name}" in entry_points for name in ("hf", "timm", "torchvision"))
