"""Security, with numbers: no remote code without a flag and a pinned revision, no unpickling on any
load path, 5,000 fuzzed references that read nothing outside the caches and open no socket, offline
means offline, and plugins that cannot stop the CLI; plus the basic refusals (fetch patterns, an
uncached repository offline, a weights file that does not fit).
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import hubtune
import hubtune.api
from hubtune import constants, plugins
from hubtune.errors import BackboneOptionError, HubtuneError, OfflineError, UnsafeModelError
from hubtune.hfhub import CODE_PATTERNS, SAFE_PATTERNS, cached_commit, repo_folder, seed_snapshot

MINILM = "hf:sentence-transformers/all-MiniLM-L6-v2"


# -- planted pickles and copied snapshots ---------------------------------------------------------------------
class _Payload:
    """Unpickling this creates the canary file: proof that a pickle was loaded."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (open, (str(self.canary), "w"))


def _plant_pickle(path: Path, canary: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(canary)))


def _copy_snapshot(repo: str, dest: Path) -> Path:
    source = repo_folder(repo) / "snapshots" / cached_commit(repo)
    shutil.copytree(source, dest)
    return dest


# -- basic refusals -------------------------------------------------------------------------------------------
def test_fetch_patterns_never_include_code_or_pickles() -> None:
    risky = ["modeling_evil.py", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "x.pkl", "tf_model.h5"]
    for name in risky:
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in SAFE_PATTERNS), name
    assert any(fnmatch.fnmatch("modeling_evil.py", p) for p in CODE_PATTERNS)


def test_offline_uncached_repository_is_a_clear_error() -> None:
    with pytest.raises(OfflineError, match="offline mode is on"):
        hubtune.load_backbone("hf:hubtune-test/never-seeded", offline=True)


def test_mismatched_weights_file_names_the_keys(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"not_a_layer.weight": torch.zeros(2)}, str(path))
    with pytest.raises(BackboneOptionError, match="does not fit"):
        hubtune.load_backbone("timm:test_resnet", weights=str(path))


# -- watching: sockets, file opens, unpickling ----------------------------------------------------------------
class _Watch:
    """Process-wide audit hook (they cannot be removed), recording only while ``active``."""

    active = False
    opens: list[str] = []
    find_class: list[tuple[str, str]] = []

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if not cls.active:
            return
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.opens.append(os.fsdecode(args[0]))
        elif event == "pickle.find_class":
            cls.find_class.append((str(args[0]), str(args[1])))


sys.addaudithook(_Watch.hook)


class _Pickled:
    pass


@pytest.fixture
def watch() -> Iterator[type[_Watch]]:
    import pickle

    _Watch.opens, _Watch.find_class, _Watch.active = [], [], True
    try:
        Path(__file__).read_bytes()  # positive controls: the hook sees an open and an unpickling
        pickle.loads(pickle.dumps(_Pickled()))
        assert _Watch.opens and _Watch.find_class, "the audit hook records nothing: the checks would be vacuous"
        _Watch.opens.clear()
        _Watch.find_class.clear()
        yield _Watch
    finally:
        _Watch.active = False


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way to open a connection raises and is recorded."""
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(repr(args[1:3] if len(args) > 1 else args)[:200])
        raise OSError("network blocked by the test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def invoke(*args: str) -> Any:
    from hubtune.cli import cli

    return CliRunner().invoke(cli, list(args))


# -- offline means offline ------------------------------------------------------------------------------------
def test_offline_pull_info_extract_open_no_socket(no_network: list[str], tiny_bert_repo: str, tmp_path: Path,
                                                  figure) -> None:
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": f"sentence number {i}", "label": "ab"[i % 2]}) + "\n" for i in range(20)))
    commands = []
    for ref in (MINILM, f"hf:{tiny_bert_repo}"):
        for args in (["pull", ref, "--offline", "--json"], ["info", ref, "--json"],
                     ["extract", ref, str(data), "--cache", str(tmp_path / "cache"), "--no-progress", "--json"]):
            result = invoke(*args)
            assert result.exit_code == 0, result.output
            commands.append(args[0])
    assert no_network == []
    figure("offline (HF_HUB_OFFLINE=1, in-process)", f"{len(commands)} commands (pull/info/extract of MiniLM and a "
           f"seeded BERT): {len(no_network)} connection attempts")


_BLOCKED_RUN = """
import json, os, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:3])[:200])
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from hubtune.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({"attempts": attempts, "codes": codes}))
"""


@pytest.mark.slow
def test_offline_flag_alone_opens_no_socket(tiny_bert_repo: str, tmp_path: Path, figure) -> None:
    """A fresh process without HF_HUB_OFFLINE: --offline alone must keep every library off the network."""
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(10)))
    runs = [[command, f"hf:{tiny_bert_repo}", "--offline", "--json"] for command in ("pull", "info")]
    runs.append(["extract", f"hf:{tiny_bert_repo}", str(data), "--cache", str(tmp_path / "c"), "--offline",
                 "--no-progress", "--json"])
    runs.append(["extract", MINILM, str(data), "--cache", str(tmp_path / "c"), "--offline", "--no-progress"])
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HUBTUNE_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, json.dumps(runs)], capture_output=True, text=True,
                            env=env, timeout=300)
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["codes"] == [0] * len(runs), result.stderr[-3000:]
    assert outcome["attempts"] == []
    figure("offline (--offline, HF_HUB_OFFLINE unset, fresh process)",
           f"{len(runs)} commands: {len(outcome['attempts'])} connection attempts")


# -- fuzzed model references ----------------------------------------------------------------------------------
_PIECES = ["..", ".", "/", "//", "~", "\\", "%2e%2e", "%2F", "etc", "passwd", "models--x", "sentence-transformers",
           "all-MiniLM-L6-v2", "resnet18", "test_resnet", "hf-hub:", ":", "@", "main", "refs/pr/1", "\x00", " ",
           "\n", "é", "C:", "file:", "/etc/passwd", "..\\..", "a" * 97, "hubtune-test", "tiny-bert", "IMAGENET1K_V1",
           "0" * 40, "-", "_", "$HOME", "*", "?", "[x]", "\u202e", "snapshots", "blobs", "refs"]
_PREFIXES = ["", "hf:", "timm:", "torchvision:", "timm:hf-hub:", "local:", "nosuch:", "HF:", "file://"]
REFS = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(_PIECES), max_size=8).map("".join),
    st.tuples(st.sampled_from(_PREFIXES), st.lists(st.sampled_from(_PIECES), max_size=6).map("".join),
              st.sampled_from(["", "@main", "@" + "0" * 40, "@../x", "@IMAGENET1K_V1", "@v1.0"])).map("".join),
)


def _allowed_roots() -> list[str]:
    import site

    roots = [os.environ["HF_HOME"], os.environ["TORCH_HOME"], os.environ["HUBTUNE_HOME"], sys.prefix,
             sys.base_prefix, *site.getsitepackages(), *(entry for entry in sys.path if entry)]
    return [os.path.realpath(root) for root in roots]  # the caches, and Python's own install and import path


def _inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


@pytest.mark.slow
def test_5000_fuzzed_references_stay_in_the_caches_and_off_the_network(no_network: list[str], watch,
                                                                       tiny_bert_repo: str, figure) -> None:
    roots = _allowed_roots()
    seen = {"examples": 0, "errors": 0, "accepted": 0, "opens": 0}
    kinds: dict[str, int] = {}
    for warm_up in ("timm:resnet18", "torchvision:resnet18", MINILM, "resnet18", "a/b"):  # lazy imports first
        try:
            hubtune.api.pull(warm_up, offline=True)
        except HubtuneError:
            pass

    @settings(max_examples=5000, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(REFS)
    @example(MINILM)  # and a few that resolve to cached files, so the open check sees real reads
    @example(f"hf:{tiny_bert_repo}")
    @example(f"{tiny_bert_repo}@main")
    @example(f"hf:{tiny_bert_repo}/../../../../etc/passwd")
    def pull_offline(ref: str) -> None:
        seen["examples"] += 1
        watch.opens.clear()
        try:
            hubtune.api.pull(ref, offline=True)
            seen["accepted"] += 1
        except HubtuneError as exc:  # anything else is a crash: the test fails on it
            message = str(exc)
            assert message and "\n" not in message, f"{ref!r}: a multi-line error: {message!r}"
            seen["errors"] += 1
            kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
        seen["opens"] += len(watch.opens)
        outside = [p for p in watch.opens if not _inside(p, roots)]
        assert not outside, f"{ref!r} opened files outside the cache roots: {outside}"

    pull_offline()
    assert seen["examples"] >= 5000 and no_network == []
    assert seen["opens"] > 0, "the audit hook saw no file opened at all: the check would be vacuous"
    figure("fuzzed references", f"{seen['examples']} references through `pull --offline`: {seen['errors']} one-line "
           f"errors ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), {seen['accepted']} accepted; "
           f"{seen['opens']} file opens, 0 outside the cache roots and Python's import path; {len(no_network)} "
           "connection attempts")


# -- no unpickling anywhere -----------------------------------------------------------------------------------
def _torch_load_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    import torch

    calls: list[dict] = []
    real = torch.load

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append({"weights_only": kwargs.get("weights_only")})
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recorded)
    return calls


def test_planted_pickles_never_run_on_any_load_path(tiny_bert_repo: str, tiny_vit_repo: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, watch, figure) -> None:
    import torch
    from torchvision.models import get_model_weights

    canary = tmp_path / "canary"
    loads = _torch_load_calls(monkeypatch)
    outcomes: dict[str, str] = {}

    # hf: a repository with safetensors *and* a malicious pytorch_model.bin loads the safetensors
    for repo, name in ((tiny_bert_repo, "both-bert"), (tiny_vit_repo, "both-vit")):
        folder = _copy_snapshot(repo, tmp_path / name)
        _plant_pickle(folder / "pytorch_model.bin", canary)
        seed_snapshot(f"hubtune-test/{name}", folder)
        hubtune.load_backbone(f"hf:hubtune-test/{name}")
        outcomes[f"hf {name} (.safetensors + .bin)"] = "loaded the safetensors"
    # hf: only a .bin
    folder = _copy_snapshot(tiny_bert_repo, tmp_path / "only-bin")
    (folder / "model.safetensors").unlink()
    _plant_pickle(folder / "pytorch_model.bin", canary)
    seed_snapshot("hubtune-test/only-bin", folder)
    # timm: its Hub repository holds only a malicious pytorch_model.bin
    timm_folder = tmp_path / "timm-repo"
    timm_folder.mkdir()
    (timm_folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "num_classes": 1000}))
    _plant_pickle(timm_folder / "pytorch_model.bin", canary)
    seed_snapshot("timm/resnet18.a1_in1k", timm_folder)
    # torchvision: a malicious file planted where the checkpoint would be cached
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(get_model_weights("resnet18")["DEFAULT"].url).name
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    _plant_pickle(checkpoint, canary)
    # label: (ref, load options, the error expected and what its message says; HubtuneError: any clear one)
    refused = {"hf only .bin": ("hf:hubtune-test/only-bin", {}, UnsafeModelError, "no .safetensors weights"),
               "timm hub .bin": ("timm:resnet18.a1_in1k", {}, HubtuneError, None),
               "torchvision cached checkpoint": ("torchvision:resnet18", {}, HubtuneError, None),
               **{f"--weights x{suffix}": ("timm:test_resnet", {"weights": str(tmp_path / f"x{suffix}")},
                                           BackboneOptionError, "safetensors")
                  for suffix in (".bin", ".pt", ".pth", ".ckpt")},
               "--weights x.safetensors": ("timm:test_resnet", {"weights": str(tmp_path / "x.safetensors")},
                                           HubtuneError, None)}
    for suffix in (".bin", ".pt", ".pth", ".ckpt", ".safetensors"):  # a pickle even under a safe name
        _plant_pickle(tmp_path / f"x{suffix}", canary)
    try:
        for label, (ref, overrides, error, says) in refused.items():
            with pytest.raises(error, match=says) as info:
                hubtune.load_backbone(ref, offline=True, **overrides)
            assert "\n" not in str(info.value)
            outcomes[label] = f"refused: {type(info.value).__name__}"
    finally:
        checkpoint.unlink()
    assert not canary.exists(), "a planted pickle ran its payload"
    assert watch.find_class == [], f"full unpickling happened: {watch.find_class[:5]}"
    assert all(call["weights_only"] is True for call in loads), loads
    figure("malicious pickles", f"{len(outcomes)} load paths ({'; '.join(f'{k}: {v}' for k, v in outcomes.items())}); "
           f"canary absent, {len(watch.find_class)} pickle.find_class audit events, {len(loads)} torch.load calls, "
           "all weights_only=True")


# -- remote code ----------------------------------------------------------------------------------------------
def test_remote_code_repository_is_refused_and_no_code_is_fetched_or_imported(tiny_bert_repo: str, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch,
                                                                             figure) -> None:
    import huggingface_hub

    canary = tmp_path / "canary"
    folder = _copy_snapshot(tiny_bert_repo, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    seed_snapshot("hubtune-test/remote-code-2", folder)
    asked: list[list[str]] = []
    real = huggingface_hub.snapshot_download

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(list(kwargs.get("allow_patterns") or []))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", recording)
    modules = Path(os.environ["HF_HOME"]) / "modules"
    before = set(modules.rglob("*.py")) if modules.exists() else set()
    with pytest.raises(UnsafeModelError, match="--trust-remote-code"):  # the API: no flag
        hubtune.load_backbone("hf:hubtune-test/remote-code-2")
    with pytest.raises(UnsafeModelError, match="pinned revision"):  # the flag without a pinned revision
        hubtune.load_backbone("hf:hubtune-test/remote-code-2", trust_remote_code=True)
    attempts = [["info", "hf:hubtune-test/remote-code-2"],
                ["info", "hf:hubtune-test/remote-code-2", "--trust-remote-code"],
                ["info", "hf:hubtune-test/remote-code-2@main", "--trust-remote-code"],
                ["extract", "hf:hubtune-test/remote-code-2", str(tmp_path), "--cache", str(tmp_path / "c")]]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("text")
    for args in attempts:
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        error = result.output.strip().splitlines()[-1]
        assert error.startswith("Error: ") and ("--trust-remote-code" in error or "pinned revision" in error), error
    assert not canary.exists() and "modeling_evil" not in sys.modules
    assert (set(modules.rglob("*.py")) if modules.exists() else set()) == before
    assert asked and not any(fnmatch.fnmatch("modeling_evil.py", p) for patterns in asked for p in patterns)
    figure("remote code", f"2 API loads (no flag; flag without a pin) refused with UnsafeModelError; {len(attempts)} "
           f"CLI attempts (no flag, flag without a pin, flag with @main, extract): {len(attempts)} refused with "
           f"exit code 1; {len(asked)} Hub fetches, none allowing *.py; 0 .py files "
           "written to the modules cache, 0 imported, canary absent")


# -- plugins --------------------------------------------------------------------------------------------------
def test_plugins_cannot_stop_the_cli_and_the_allow_list_keeps_them_unimported(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              figure) -> None:
    counter = tmp_path / "imports"
    (tmp_path / "hubtune_exploding_xyz.py").write_text(textwrap.dedent(f"""
        with open({str(counter)!r}, "a") as handle:
            handle.write("x")
        raise RuntimeError("this plugin explodes on import")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    exploding = EntryPoint(name="exploding", value="hubtune_exploding_xyz", group=constants.ENTRY_POINT_GROUP)
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*real(group=group), exploding])

    monkeypatch.setenv("HUBTUNE_LOAD_PLUGINS", "timm")
    plugins.reset()
    limited = invoke("sources", "--json")
    assert limited.exit_code == 0 and [row["name"] for row in json.loads(limited.stdout)] == ["timm"]
    assert not counter.exists()  # not even imported

    monkeypatch.delenv("HUBTUNE_LOAD_PLUGINS")
    plugins.reset()
    monkeypatch.delitem(sys.modules, "hubtune_exploding_xyz", raising=False)
    full = invoke("sources", "--json")
    assert full.exit_code == 0, full.output
    names = [row["name"] for row in json.loads(full.stdout)]
    assert {"hf", "timm", "torchvision"} <= set(names) and "exploding" not in names
    assert counter.read_text() == "x"
    assert any(f.name == "exploding" and "explodes on import" in f.error for f in plugins.plugin_failures())
    figure("plugins", f"allow-list 'timm': 1 source, the exploding plugin imported 0 times; without it: "
           f"{len(names)} sources listed, exit code 0, the exploding plugin skipped with a warning")
