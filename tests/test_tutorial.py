"""docs/tutorial.md is run as written: every ``bash`` block in one bash session (install included:
a fresh venv, ``pip install "$HUBTUNE_SRC[sklearn]"`` from a copy of this source tree), then every
``python`` block as one script, with that venv's Python, in the folder the shell part ended in.

HOME and HUBTUNE_HOME point into the test's own folder, so nothing outside it is read or written.
The install reuses pip's cache (CI has just installed the same packages); it is the slow part.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(TUTORIAL.read_text()) if lang == language]


def test_the_tutorial_has_only_blocks_the_test_runs() -> None:
    languages = [lang for lang, _ in BLOCK.findall(TUTORIAL.read_text())]
    assert set(languages) <= {"bash", "python"}, f"a block this test would not run: {languages}"
    first_python = languages.index("python")
    assert "bash" not in languages[first_python:], "the shell part comes first: the test runs it first"


def source_copy(destination: Path) -> Path:
    """The tracked files of this checkout (what a clone has), so the build writes nothing here."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        target = destination / name
        if (ROOT / name).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return destination


@pytest.mark.slow
def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "HUBTUNE_HOME": str(home / ".hubtune"),
           "HUBTUNE_SRC": str(source_copy(tmp_path / "hubtune-src")), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not p.startswith(str(Path(sys.prefix))))  # not this suite's venv
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))  # HOME moved: keep pip's cache
    script = tmp_path / "tutorial.sh"
    python_part = tmp_path / "tutorial.py"
    python_part.write_text("\n".join(blocks("python")))
    script.write_text("set -euo pipefail\n" + "\n".join(blocks("bash"))
                      + f'\npwd > "{tmp_path / "workdir"}"\npython "{python_part}"\n')
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-6000:]}"
    out = result.stdout
    workdir = Path((tmp_path / "workdir").read_text().strip())
    assert out.startswith("hubtune, version")
    assert "chosen: timm:test_" in out
    assert (workdir / "compare.png").stat().st_size > 1000 and (workdir / "colours-head").is_dir()
    assert "(2, 384) float32" in out
    assert "['negative', 'positive']" in out and "['positive', 'negative']" in out
    assert (workdir / "reviews-head").is_dir()
