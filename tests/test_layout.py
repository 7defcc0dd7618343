"""The package layout holds: no module over 400 lines, no import cycle, no private name imported
across modules (``scripts/check_layout.py``, which anyone can run); and the checker finds each."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_layout.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_layout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_repository_layout_passes() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "layout ok" in result.stdout


def test_a_cycle_at_import_time_is_found_and_lazy_or_type_checking_imports_are_not(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "hubtune/__init__.py": "",
        "hubtune/a.py": "from hubtune.b import B\nA = 1\n",
        "hubtune/b.py": "from hubtune import c\nB = 2\n",
        "hubtune/c.py": "import hubtune.a\n",
        "hubtune/d.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from hubtune.e import E
            def f():
                from hubtune.e import E
            D = 1
            """,
        "hubtune/e.py": "from hubtune.d import D\nE = 1\n",
    })
    problems = _checker().check(root)
    cycles = [p for p in problems if p.startswith("import cycle")]
    assert len(cycles) == 1 and all(f"hubtune.{m}" in cycles[0] for m in "abc"), problems
    assert not [p for p in problems if "hubtune.d" in p or "hubtune.e" in p]


def test_a_package_init_that_imports_its_importer_is_a_cycle(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "hubtune/__init__.py": "",
        "hubtune/pkg/__init__.py": "from hubtune.pkg.inner import X\n",
        "hubtune/pkg/inner.py": "X = 1\n",  # importing a sibling does not re-enter the package's own __init__
        "hubtune/user.py": "from hubtune.pkg.inner import X\n",
        "hubtune/other/__init__.py": "from hubtune.other.mod import Y\n",
        "hubtune/other/mod.py": "from hubtune.user2 import Z\nY = 1\n",
        "hubtune/user2.py": "from hubtune.other.mod import Y\nZ = 1\n",  # runs other/__init__ -> mod -> user2
    })
    problems = _checker().check(root)
    assert [p for p in problems if "cycle" in p] and not [p for p in problems if "hubtune.pkg" in p], problems


def test_private_names_across_modules_and_long_modules_are_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "hubtune/__init__.py": "",
        "hubtune/a.py": "_HIDDEN = 1\n__all__ = []\n",
        "hubtune/b.py": "def f():\n    from hubtune.a import _HIDDEN\n    return _HIDDEN\n",
        "hubtune/c.py": "from hubtune import a\nfrom hubtune.a import __all__\nX = a._HIDDEN\n",
        "hubtune/long.py": "X = 1\n" * 401,
        "plugins/hubtune_x/__init__.py": "from hubtune.a import _HIDDEN\n",
        "plugins/notapackage/mod.py": "from hubtune.a import _HIDDEN\n",
    })
    problems = _checker().check(root)
    private = [p for p in problems if p.startswith("private name")]
    assert len(private) == 3, problems  # b (inside a function too), c (attribute), the plugin package
    assert any("b.py:2" in p for p in private) and any("c.py:3" in p for p in private)
    assert any("hubtune_x" in p for p in private) and not any("notapackage" in p for p in private)
    assert [p for p in problems if p.startswith("too long")] == [
        f"too long: {Path('hubtune/long.py')} has 401 lines (at most 400)"]
    assert subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True).returncode == 1
