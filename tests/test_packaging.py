"""The built wheel ships every module of the source tree (a package left out of pyproject's
list installs fine in editable mode and breaks only for users of a real ``pip install``)."""

from __future__ import annotations

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
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("hubtune-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    missing = _source_modules() - shipped
    assert not missing, f"modules the wheel leaves out (add their package to [tool.setuptools] packages): {sorted(missing)}"
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert all(f"{name} = hubtune_{name}" in entry_points for name in ("hf", "timm", "torchvision"))
