"""The example plugin of docs/plugins.md, installed like a third-party distribution.

The plugin's files are extracted from the guide (fenced blocks starting with ``# file: PATH``),
installed offline with ``pip install --no-deps --no-index --target``, and exercised through the
CLI in subprocesses with the target folder on ``PYTHONPATH``. A second plugin that raises on import
checks that a broken plugin is skipped with a warning naming it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
BUILT_IN = {"hf", "timm", "torchvision"}

BROKEN_FILES = {
    "pyproject.toml": textwrap.dedent(
        """\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "hubtune-broken"
        version = "0.0.1"

        [project.entry-points.hubtune]
        broken = "hubtune_broken"

        [tool.setuptools]
        packages = ["hubtune_broken"]
        """
    ),
    "hubtune_broken/__init__.py": 'raise ImportError("boom")\n',
}


def guide_files(text: str) -> dict[str, str]:
    """Every fenced block of the guide whose first line is ``# file: PATH``, by PATH."""
    files = {}
    for match in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        body = match.group(1)
        marker = re.match(r"# file: (\S+)[ \t]*\n", body)
        if marker:
            files[marker.group(1)] = body
    return files


def _install(files: dict[str, str], folder: Path) -> Path:
    """Write a plugin's files under ``folder/src`` and pip-install it into ``folder/site``."""
    source, site = folder / "src", folder / "site"
    for relative, text in files.items():
        path = source / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--disable-pip-version-check", "--target", str(site), str(source),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return site


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example plugin (from the guide) and the broken one, each in its own target folder."""
    files = guide_files(GUIDE.read_text())
    assert set(files) == {"pyproject.toml", "hubtune_example/__init__.py"}, sorted(files)
    root = tmp_path_factory.mktemp("third-party-plugins")
    return {"example": _install(files, root / "example"), "broken": _install(BROKEN_FILES, root / "broken")}


def run(args: list[str], paths: list[Path], load: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with ``paths`` prepended to PYTHONPATH and HUBTUNE_LOAD_PLUGINS=``load``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in paths] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("HUBTUNE_LOAD_PLUGINS", None)
    if load is not None:
        env["HUBTUNE_LOAD_PLUGINS"] = load
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def hubtune(*args: str, paths: list[Path], load: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run(["-m", "hubtune", *args], paths, load, check)


def source_names(result: subprocess.CompletedProcess) -> list[str]:
    return [row["name"] for row in json.loads(result.stdout)]


# -- the example plugin -------------------------------------------------------------------------------
def test_sources_lists_the_example_with_plugin_name_and_version(sites: dict[str, Path]) -> None:
    result = hubtune("sources", "--json", paths=[sites["example"]])
    rows = json.loads(result.stdout)
    assert {"name": "example", "plugin": "example", "version": "0.1.0"} in rows
    assert set(source_names(result)) >= BUILT_IN | {"example"}
    assert "failed to load" not in result.stderr


def test_models_lists_the_example_models(sites: dict[str, Path]) -> None:
    rows = json.loads(hubtune("models", "--source", "example", "--json", paths=[sites["example"]]).stdout)
    assert rows == [
        {"ref": "example:tiny", "source": "example", "modality": "image"},
        {"ref": "example:wide", "source": "example", "modality": "image"},
        {"ref": "example:chars", "source": "example", "modality": "text"},
    ]
    rows = json.loads(hubtune("models", "example:w*", "--source", "example", "--json", paths=[sites["example"]]).stdout)
    assert [row["ref"] for row in rows] == ["example:wide"]


def test_info_with_random_weights(sites: dict[str, Path]) -> None:
    data = json.loads(hubtune("info", "example:tiny", "--weights", "random", "--json", paths=[sites["example"]]).stdout)
    assert data["dim"] > 0 and data["dim"] == 16
    assert data["ref"] == "example:tiny" and data["source"] == "example" and data["modality"] == "image"
    assert data["weights"] == "random:0" and data["layers"] == ["conv", "stem"] and data["pool"] == "avg"
    assert data["preprocess"]["size"] == [32, 32] and len(data["fingerprint"]) == 32


def test_info_resolves_the_alias(sites: dict[str, Path]) -> None:
    data = json.loads(hubtune("info", "example-tiny", "--weights", "random:1", "--pool", "max", "--device", "cpu",
                              "--json", paths=[sites["example"]]).stdout)
    assert data["ref"] == "example:tiny" and data["pool"] == "max" and data["weights"] == "random:1"
    assert data["dim"] == 16


def test_plugin_command_runs_and_is_listed(sites: dict[str, Path]) -> None:
    result = hubtune("example-hello", "--name", "tester", paths=[sites["example"]])
    assert result.stdout.strip() == "hello tester, from hubtune-example 0.1.0"
    assert "example-hello" in hubtune("--help", paths=[sites["example"]]).stdout


def test_help_with_the_example_installed_imports_no_torch(sites: dict[str, Path]) -> None:
    code = (
        "import sys\nfrom hubtune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('hubtune_example' in sys.modules, 'torch' in sys.modules)"
    )
    out = run(["-c", code], [sites["example"]]).stdout
    assert out.strip().splitlines()[-1] == "True False"


def test_in_process_api_loads_the_example_backbone(sites: dict[str, Path], tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import io, json, pickle
        import numpy as np
        from PIL import Image
        from safetensors.torch import save_file
        import hubtune
        from hubtune.errors import BackboneOptionError

        buffer = io.BytesIO()
        Image.new("RGB", (50, 40), (200, 30, 90)).save(buffer, format="PNG")
        items = [Image.new("RGB", (20, 70), (10, 20, 30)), buffer.getvalue()]
        backbone = hubtune.load_backbone("example:tiny", weights="random:3", device="cpu")
        first = backbone.embed(items)
        other = hubtune.load_backbone("example:tiny", weights="random:4", device="cpu")
        path = {str(tmp_path / "tiny.safetensors")!r}
        save_file({{k: v.contiguous() for k, v in backbone.model.state_dict().items()}}, path)
        from_file = hubtune.load_backbone("example:tiny", weights=path, device="cpu")
        pickle.loads(pickle.dumps(backbone.preprocessor))
        try:
            hubtune.load_backbone("example:tiny", weights="random", layer="nope", device="cpu")
            layer_error = None
        except BackboneOptionError as error:
            layer_error = str(error)
        bare = hubtune.load_backbone("wide", device="cpu")  # a bare name only the example claims
        print(json.dumps({{
            "shape": list(first.shape), "dtype": str(first.dtype), "dim": backbone.dim,
            "deterministic": bool(np.array_equal(first, backbone.embed(items))),
            "seed_matters": not np.allclose(first, other.embed(items)),
            "fingerprints_differ": backbone.fingerprint() != other.fingerprint(),
            "file_matches": bool(np.allclose(first, from_file.embed(items), atol=1e-6)),
            "file_weights": from_file.weights,
            "layer_error": layer_error,
            "bare": [str(bare.ref), bare.revision, bare.dim],
            "plugin": hubtune.get_sources()["example"].plugin,
        }}))
        """
    )
    data = json.loads(run(["-c", code], [sites["example"]]).stdout.strip().splitlines()[-1])
    assert data["shape"] == [2, 16] and data["dim"] == 16 and data["dtype"] == "float32"
    assert data["deterministic"] and data["seed_matters"] and data["fingerprints_differ"]
    assert data["file_matches"] and data["file_weights"].startswith("file-sha256:")
    assert data["layer_error"] and "valid layers: conv" in data["layer_error"]
    assert data["bare"] == ["example:wide@v1", "v1", 64]
    assert data["plugin"] == "example"


# -- a broken plugin and the allow-list ---------------------------------------------------------------
def test_a_plugin_failing_on_import_is_skipped_with_a_warning(sites: dict[str, Path]) -> None:
    paths = [sites["example"], sites["broken"]]
    result = hubtune("sources", "--json", paths=paths)
    names = source_names(result)
    assert set(names) >= BUILT_IN | {"example"} and "broken" not in names
    assert "broken" in result.stderr and "failed to load" in result.stderr and "boom" in result.stderr
    hello = hubtune("example-hello", paths=paths)
    assert hello.stdout.startswith("hello world") and "broken" in hello.stderr


def test_load_plugins_allow_list(sites: dict[str, Path]) -> None:
    paths = [sites["example"], sites["broken"]]
    only = hubtune("sources", "--json", paths=paths, load="example")
    assert source_names(only) == ["example"]
    assert "broken" not in only.stderr  # not in the list: not even imported
    assert source_names(hubtune("sources", "--json", paths=paths, load="")) == []
    both = hubtune("sources", "--json", paths=paths, load=" timm , example ,broken")
    assert source_names(both) == ["example", "timm"] and "broken" in both.stderr
