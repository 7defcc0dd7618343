"""``hubtune pull`` and ``hubtune models --remote`` over HTTP, through the real huggingface_hub client.

Every test runs the installed ``hubtune`` console script in a subprocess whose ``HF_ENDPOINT`` is a local
Hub (``tests/hubserver.py``, on 127.0.0.1) and whose ``HF_HOME`` is the test's own folder, so nothing
reaches the internet or the user's cache. The server records every request, so a test can say which
files were asked for, which were retried and which were resumed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from hubtune.hfhub import RETRY_ATTEMPTS, SAFE_PATTERNS, cached_commit, repo_folder
from tests.hubserver import HubServer

REPO = "hubtune-online/tiny-bert"
#: what the served repository holds besides the model, none of which hubtune may ask for
UNSAFE = {
    "pytorch_model.bin": b"\x80\x04pickled weights that must never be fetched",
    "training_args.pt": b"\x80\x04a pickled object",
    "modeling_custom.py": b"raise SystemExit('remote code ran')\n",
}
_SCRIPT = Path(sys.executable).with_name("hubtune")
HUBTUNE = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "hubtune"]


@pytest.fixture(scope="module")
def bert_files(tiny_bert_repo: str) -> dict[str, bytes]:
    """The tiny BERT's files (``save_pretrained`` output), as the served repository holds them."""
    folder = repo_folder(tiny_bert_repo) / "snapshots" / str(cached_commit(tiny_bert_repo))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture
def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf"


@pytest.fixture
def online_env(hub: HubServer, hf_home: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``hubtune`` run: online, against the local Hub, every cache in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUBTUNE_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN")
           and not k.lower().endswith("_proxy")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), HUBTUNE_HOME=str(tmp_path / "hubtune"),
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1")
    return env


@pytest.fixture
def hubtune(online_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """``hubtune(*args, env=None, check=True)``: the console script against the local Hub, online unless
    ``env`` says otherwise; raises with stderr when it fails and ``check``."""
    base = online_env

    def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*HUBTUNE, *args], capture_output=True, text=True, env={**base, **(env or {})},
                                timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"hubtune {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    return run


def _pull(hubtune: Callable, ref: str, *extra: str) -> dict:
    return json.loads(hubtune("pull", ref, "--json", *extra).stdout)


def _safe(paths) -> set[str]:
    return {p for p in paths if any(fnmatch.fnmatch(Path(p).name, pattern) for pattern in SAFE_PATTERNS)}


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _big_safetensors(size: int) -> bytes:
    """A real safetensors file of about ``size`` bytes (one float32 tensor of seeded noise)."""
    import numpy as np
    from safetensors.numpy import save

    return save({"weight": np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)})


# -- pull ------------------------------------------------------------------------------------------------------
def test_pull_by_branch_and_by_pinned_sha(hub: HubServer, hubtune: Callable, hf_home: Path,
                                          bert_files: dict[str, bytes]) -> None:
    old = hub.add_repo(REPO, {**bert_files, **UNSAFE, "extra.json": b'{"v": 1}'})
    new = hub.add_repo(REPO, {**bert_files, **UNSAFE, "extra.json": b'{"v": 2}'})
    dev = hub.add_repo(REPO, {**bert_files, "extra.json": b'{"v": 3}'}, branch="dev")
    snapshots = hf_home / "hub" / "models--hubtune-online--tiny-bert" / "snapshots"

    for ref, commit, version in [(REPO, new, 2), (f"{REPO}@{old}", old, 1), (f"hf:{REPO}@dev", dev, 3)]:
        data = _pull(hubtune, ref)
        assert data == {"ref": f"hf:{REPO}@{commit}", "revision": commit, "path": str(snapshots / commit)}, ref
        assert json.loads((Path(data["path"]) / "extra.json").read_text()) == {"v": version}
        assert (Path(data["path"]) / "model.safetensors").read_bytes() == bert_files["model.safetensors"]
    refs = snapshots.parent / "refs"
    assert (refs / "main").read_text() == new and (refs / "dev").read_text() == dev
    # a pinned sha is not resolved through a branch: no model-info request names it
    assert not [r for r in hub.requests() if r["path"].endswith(f"/revision/{old}")]


def test_pull_fetches_only_safe_files(hub: HubServer, hubtune: Callable, bert_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, {**bert_files, **UNSAFE})
    data = _pull(hubtune, REPO)
    wanted = _safe(bert_files)
    assert "model.safetensors" in wanted and not _safe(UNSAFE)
    assert hub.resolved_files() == wanted  # neither HEAD nor GET for a .bin, .pt or .py
    assert hub.resolved_files("GET") <= wanted
    on_disk = {p.relative_to(data["path"]).as_posix() for p in Path(data["path"]).rglob("*") if p.is_file()}
    assert on_disk == wanted
    cdn = {r["path"].rsplit("/", 1)[1] for r in hub.requests(role="cdn")}
    assert cdn == {hashlib.sha256(bert_files["model.safetensors"]).hexdigest()}


def test_a_dropped_transfer_resumes_with_a_range_request(hub: HubServer, hubtune: Callable, hf_home: Path,
                                                         bert_files: dict[str, bytes]) -> None:
    from huggingface_hub import constants

    # huggingface_hub writes what it received in DOWNLOAD_CHUNK_SIZE pieces (10 MiB): only a file past one
    # piece has something to resume from, so the file is two and a bit pieces and the cut falls after the first
    big = _big_safetensors(2 * constants.DOWNLOAD_CHUNK_SIZE + 4096)
    hub.add_repo(REPO, {"config.json": bert_files["config.json"], "model.safetensors": big})
    hub.drop("/blobs/", fraction=0.75)
    data = _pull(hubtune, REPO)

    gets = hub.requests("GET", "cdn")
    assert len(gets) == 2, gets
    assert gets[0]["range"] is None and gets[0]["status"] == 200
    offset = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(big) and gets[1]["status"] == 206
    assert hashlib.sha256((Path(data["path"]) / "model.safetensors").read_bytes()).digest() == \
        hashlib.sha256(big).digest()
    assert not list((hf_home / "hub").rglob("*.incomplete"))


@pytest.mark.slow
def test_a_killed_pull_is_finished_by_the_next_one(hub: HubServer, hubtune: Callable, hf_home: Path,
                                                   online_env: dict[str, str], bert_files: dict[str, bytes],
                                                   figure: Callable) -> None:
    from huggingface_hub import constants

    big = _big_safetensors(2 * constants.DOWNLOAD_CHUNK_SIZE + 4096)
    commit = hub.add_repo(REPO, {"config.json": bert_files["config.json"], "model.safetensors": big})
    stall = hub.stall("/blobs/", fraction=0.75)
    child = subprocess.Popen([*HUBTUNE, "pull", REPO], env=online_env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        assert stall.reached.wait(60), "the transfer never started"
        blobs = hf_home / "hub" / "models--hubtune-online--tiny-bert" / "blobs"
        deadline = time.monotonic() + 60  # a watchdog: until the first piece is on disk
        while not any(p.stat().st_size >= constants.DOWNLOAD_CHUNK_SIZE for p in blobs.glob("*.incomplete")):
            assert time.monotonic() < deadline and child.poll() is None, "nothing of the file reached the disk"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
        stall.release.set()
    digest = hashlib.sha256(big).hexdigest()
    assert not (blobs / digest).exists()  # nothing half-written is ever taken for the file

    # offline, the half-fetched snapshot is refused as incomplete, never handed out
    refused = hubtune("pull", REPO, "--offline", check=False)
    assert "partly in the local hub cache" in _one_line_error(refused) and f"hubtune pull hf:{REPO}" in refused.stderr

    hub.clear_log()
    data = _pull(hubtune, REPO)
    assert data["revision"] == commit
    assert (Path(data["path"]) / "model.safetensors").read_bytes() == big
    (again,) = hub.requests("GET", "cdn")
    stale = list(blobs.glob("*.incomplete"))
    figure("killed pull, next pull", f"asked for the file from {again['range'] or 'byte 0'}; "
           f"{len(stale)} stale .incomplete file(s) ({sum(p.stat().st_size for p in stale)} bytes) left in blobs/")


@pytest.mark.parametrize("token", [None, "hf_not_a_real_token"], ids=["anonymous-401", "token-403"])
def test_a_gated_repo_is_a_one_line_error_naming_hf_auth_login(hub: HubServer, hubtune: Callable, token: str | None,
                                                               bert_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, {"config.json": bert_files["config.json"]}, gated=True)
    result = hubtune("pull", REPO, env={"HF_TOKEN": token} if token else None, check=False)
    line = _one_line_error(result)
    assert "gated" in line and "hf auth login" in line and REPO in line
    assert result.returncode == 1
    assert {r["status"] for r in hub.requests() if "/resolve/" in r["path"]} == {403 if token else 401}


def test_rate_limited_requests_are_retried(hub: HubServer, hubtune: Callable, bert_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, bert_files)
    hub.fail(f"/api/models/{REPO}/revision/main", headers={"Retry-After": "1"})  # hubtune's own retry
    hub.fail("/tree/")  # these three huggingface_hub retries itself
    hub.fail("/model.safetensors", method="HEAD")
    hub.fail("/blobs/")
    result = hubtune("pull", REPO, "--json")
    assert Path(json.loads(result.stdout)["path"], "model.safetensors").read_bytes() == bert_files["model.safetensors"]
    for part in ("/revision/main", "/tree/", "/blobs/"):
        assert [r["status"] for r in hub.requests("GET") if part in r["path"]] == [429, 200], part
    assert [r["status"] for r in hub.requests("HEAD") if r["path"].endswith("/model.safetensors")] == [429, 302]
    assert "the Hub answered 429; asking again in 1 s" in result.stderr  # Retry-After honoured


def test_a_lasting_rate_limit_is_a_one_line_error(hub: HubServer, hubtune: Callable,
                                                  bert_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, bert_files)
    hub.fail("/revision/main", times=100)
    line = _one_line_error(hubtune("pull", REPO, check=False))
    assert "429" in line and "rate limited" in line and "hf auth login" in line
    assert len([r for r in hub.requests() if "/revision/main" in r["path"]]) == RETRY_ATTEMPTS



def test_an_unreachable_hub_is_a_one_line_error(hubtune: Callable) -> None:
    line = _one_line_error(hubtune("pull", REPO, env={"HF_ENDPOINT": "http://127.0.0.1:9"}, check=False))
    assert "unreachable" in line and "HF_ENDPOINT" in line and REPO in line


@pytest.mark.slow
def test_after_a_pull_the_same_commands_work_offline(hub: HubServer, hubtune: Callable, tmp_path: Path,
                                                     bert_files: dict[str, bytes]) -> None:
    commit = hub.add_repo(REPO, {**bert_files, **UNSAFE})
    pulled = _pull(hubtune, REPO)
    hub.clear_log()
    offline = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # and a Hub nobody answers at

    assert _pull(hubtune, REPO, "--offline") == pulled
    assert json.loads(hubtune("pull", REPO, "--json", env=offline).stdout) == pulled
    info = json.loads(hubtune("info", REPO, "--offline", "--json", "--device", "cpu", "--precision", "fp32",
                              env=offline).stdout)
    assert (info["revision"], info["modality"], info["dim"]) == (commit, "text", 32)
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "a first review", "label": "pos"}\n{"text": "a second one", "label": "neg"}\n')
    summary = json.loads(hubtune("extract", f"hf:{REPO}", str(texts), "--cache", str(tmp_path / "store"), "--json",
                                 "--no-progress", "--device", "cpu", "--precision", "fp32", env=offline).stdout)
    assert (summary["total"], summary["computed"], summary["failed"]) == (2, 2, 0)
    assert hub.requests() == []


# -- models --remote -------------------------------------------------------------------------------------------
@pytest.fixture
def listed(hub: HubServer) -> HubServer:
    for repo_id, task, library, downloads in [
        ("google-bert/bert-base-uncased", "fill-mask", "transformers", 900),
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-similarity", "sentence-transformers", 5000),
        ("openai/clip-vit-base-patch32", "zero-shot-image-classification", "transformers", 3000),
        ("timm/resnet50.a1_in1k", "image-classification", "timm", 2000),
        ("someone/bert-experiment", None, None, 7),
    ]:
        hub.add_repo(repo_id, None, pipeline_tag=task, library_name=library, downloads=downloads)
    return hub


def test_models_remote_searches_the_hub(listed: HubServer, hubtune: Callable) -> None:
    rows = json.loads(hubtune("models", "bert", "--remote", "--json").stdout)
    assert rows == [
        {"ref": "hf:google-bert/bert-base-uncased", "source": "hf", "modality": "text", "task": "fill-mask",
         "library": "transformers", "downloads": 900},
        {"ref": "hf:someone/bert-experiment", "source": "hf", "modality": None, "task": None, "library": None,
         "downloads": 7},
    ]
    (search,) = listed.requests("GET")[-1:]
    assert search["path"] == "/api/models" and search["query"]["search"] == "bert"
    assert search["query"]["sort"] == "downloads" and search["query"]["limit"] == "20"

    top = json.loads(hubtune("models", "--remote", "--limit", "3", "--json").stdout)
    assert [(r["ref"], r["modality"]) for r in top] == [
        ("hf:sentence-transformers/all-MiniLM-L6-v2", "text"), ("hf:openai/clip-vit-base-patch32", "text+image"),
        ("hf:timm/resnet50.a1_in1k", "image")]
    assert [r["ref"] for r in json.loads(hubtune("models", "*-uncased", "--remote", "--json").stdout)] == \
        ["hf:google-bert/bert-base-uncased"]
    table = hubtune("models", "hf:clip", "--remote", env={"COLUMNS": "200"}).stdout
    assert "openai/clip-vit-base-patch32" in table and "zero-shot-image-classification" in table and "3000" in table


def test_models_remote_retries_a_rate_limit(listed: HubServer, hubtune: Callable) -> None:
    listed.fail("/api/models")
    rows = json.loads(hubtune("models", "clip", "--remote", "--json").stdout)
    assert [r["ref"] for r in rows] == ["hf:openai/clip-vit-base-patch32"]
    assert [r["status"] for r in listed.requests() if r["path"] == "/api/models"] == [429, 200]


def test_models_remote_refuses_offline_mode(listed: HubServer, hubtune: Callable) -> None:
    for args, env in [(("--offline",), None), ((), {"HF_HUB_OFFLINE": "1"})]:
        line = _one_line_error(hubtune("models", "bert", "--remote", *args, env=env, check=False))
        assert "--remote" in line and "offline" in line.lower()
    clash = hubtune("models", "--remote", "--source", "timm", check=False)
    assert clash.returncode == 2 and "--remote" in clash.stderr
    assert listed.requests() == []
