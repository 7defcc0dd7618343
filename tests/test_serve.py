"""`hubtune serve` on the embedded text model: the real server (uvicorn on 127.0.0.1, a free port) answers
what the CLI's `export`, `search --json` and `predict --json` answer; bad inputs get a 4xx JSON naming the
problem and the server keeps serving; the token guards /v1; a full queue answers 503 + Retry-After without
losing a request it accepted; a head of another model is refused at start, naming both fingerprints.

The model is loaded once for the module (the servers here share one loaded service); the CLI runs in
this process through click's runner (the same code as the console script), except in the two tests
that check the command itself.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
PINNED = ["--precision", "fp32", "--device", "cpu"]
POSITIVE = ["wonderful", "delightful", "excellent", "superb", "lovely", "brilliant", "joyful", "fantastic"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "miserable", "disgusting", "nasty", "tragic"]
TOKEN = "s3cret-token"


def cli(*args: str) -> Any:
    """``hubtune ARGS --json`` in this process; its JSON."""
    from click.testing import CliRunner

    from hubtune.cli.app import cli as group

    result = CliRunner().invoke(group, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def config(cache: Path, **overrides: Any) -> Any:
    from hubtune.backbone import LoadOptions
    from hubtune.serve.config import ServeConfig

    return ServeConfig(ref=MODEL, cache=cache, options=LoadOptions(precision="fp32", device="cpu"), port=0,
                       **overrides)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A word table extracted, exported and a linear head trained on it, by the CLI."""
    root = tmp_path_factory.mktemp("serve")
    table = root / "words.jsonl"
    rows = [{"text": w, "label": label} for ws, label in ((POSITIVE, "pos"), (NEGATIVE, "neg")) for w in ws]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cache = root / "cache"
    cli("extract", MODEL, str(table), "--cache", str(cache), *PINNED, "--no-progress")
    exported = cli("export", "--cache", str(cache), "--model", MODEL, "--dataset", "words", "--out",
                   str(root / "export"), *PINNED)
    cli("train", "--cache", str(cache), "--model", MODEL, "--dataset", "words", "--head", "linear",
        "--out", str(root / "sentiment"), *PINNED)
    return {"root": root, "cache": cache, "table": table, "texts": [row["text"] for row in rows],
            "vectors": np.load(root / "export" / "embeddings.npy"), "export": exported,
            "head": root / "sentiment"}


@pytest.fixture(scope="module")
def server(store: dict[str, Any]) -> Any:
    from hubtune.serve.runner import Running

    with Running(config(store["cache"], datasets=["words"], heads=[str(store["head"])],
                        max_body_bytes=16 << 20)) as running:
        running.client = httpx.Client(base_url=running.url, timeout=60)
        yield running
        running.client.close()


def post(server: Any, path: str, **kwargs: Any) -> httpx.Response:
    return server.client.post(path, **kwargs)


def assert_error(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A JSON error answer with ``status`` whose message names each of ``words``."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error", "message", "status"} and body["status"] == status
    for word in words:
        assert word in body["message"], (word, body["message"])
    return body


def still_serving(server: Any) -> None:
    response = post(server, "/v1/embed", json={"inputs": ["still here"]})
    assert response.status_code == 200 and len(response.json()["vectors"]) == 1


# -- results equal the CLI's ---------------------------------------------------------------------------------
def test_embed_equals_export(server: Any, store: dict[str, Any]) -> None:
    response = post(server, "/v1/embed", json={"inputs": store["texts"]})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "fingerprint", "dim", "vectors"}
    assert body["model"].startswith(MODEL + "@") and body["dim"] == 384
    assert body["fingerprint"] == store["export"]["fingerprint"]
    np.testing.assert_array_equal(np.array(body["vectors"], dtype=np.float32), store["vectors"])


def test_search_equals_the_cli(server: Any, store: dict[str, Any]) -> None:
    queries = ["marvellous", "horrid", "row:3"]
    response = post(server, "/v1/search", json={"dataset": "words", "queries": queries, "k": 4})
    assert response.status_code == 200
    got = response.json()["results"]
    want = cli("search", "--cache", str(store["cache"]), "--model", MODEL, "--dataset", "words", "-k", "4",
               *queries, *PINNED)
    assert len(got) == len(want) == 3
    for hits, expected in zip(got, want):
        assert [set(hit) for hit in hits] == [{"row", "key", "label", "score", "origin"}] * len(hits)
        assert [(h["row"], h["label"], h["score"], h["origin"]) for h in hits] == \
               [(e["row"], e["label"], e["score"], e["item"]) for e in expected]
    assert got[2][0]["row"] == 3 and got[2][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_predict_equals_the_cli(server: Any, store: dict[str, Any]) -> None:
    inputs = ["marvellous", "horrid", "fine"]
    response = post(server, "/v1/predict", json={"head": "sentiment", "inputs": inputs})
    assert response.status_code == 200
    got = response.json()["predictions"]
    want = cli("predict", str(store["head"]), *inputs, "--cache", str(store["cache"]))
    assert [(p["label"], p["score"]) for p in got] == [(w["label"], w["score"]) for w in want]
    for prediction in got:
        assert set(prediction["scores"]) == {"neg", "pos"}
        assert max(prediction["scores"].values()) == prediction["score"]
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert post(server, "/v1/predict", json={"inputs": inputs}).json() == response.json()  # the only head


def test_items_are_served_from_the_manifest_only(server: Any, store: dict[str, Any]) -> None:
    item = server.client.get("/v1/datasets/words/items/2")
    assert item.status_code == 200
    exported = json.loads((store["root"] / "export" / "items.jsonl").read_text().splitlines()[2])
    assert item.json() == {"row": 2, "key": exported["key"], "label": "pos", "origin": exported["origin"],
                           "text": store["texts"][2]}
    assert exported["origin"] == f"{store['table'].resolve()}:3"
    assert_error(server.client.get("/v1/datasets/words/items/16"), 404, "rows 0..15")
    assert_error(server.client.get("/v1/datasets/words/items/-1"), 404, "no row -1")
    assert_error(server.client.get("/v1/datasets/nope/items/0"), 404, "no dataset 'nope'", "words")
    assert_error(server.client.get("/v1/datasets/words/items/abc"), 422, "row")
    escaped = server.client.get("/v1/datasets/..%2F..%2Fetc%2Fpasswd/items/0")
    assert escaped.status_code == 404 and "root:" not in escaped.text


def test_info_readyz_and_openapi(server: Any) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}
    ready = server.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["datasets"] == ["words"]
    info = server.client.get("/v1/info").json()
    assert info["modality"] == "text" and info["inputs"] == ["text"] and info["dim"] == 384
    assert info["datasets"][0]["name"] == "words" and info["datasets"][0]["rows"] == 16
    assert info["heads"] == [{"name": "sentiment", "kind": "linear", "classes": ["neg", "pos"], "inputs": ["text"]}]
    schema = server.client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/v1/embed", "/v1/search", "/v1/predict",
            "/v1/datasets/{name}/items/{row}"} <= set(schema["paths"])
    assert {"EmbedRequest", "SearchRequest", "PredictRequest", "ImageInput", "EmbedResponse"} <= \
        set(schema["components"]["schemas"])
    body = schema["paths"]["/v1/embed"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}


# -- bad inputs: a 4xx JSON naming the problem, and the server keeps serving -----------------------------------
def _bomb_png(side: int = 100_000) -> bytes:
    """A PNG header claiming ``side`` x ``side`` pixels, a few hundred bytes in all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name, request_kwargs, status, words", [
    ("malformed JSON", {"content": b'{"inputs": ["a",', "headers": {"content-type": "application/json"}}, 400,
     ["malformed JSON"]),
    ("empty body", {"content": b"", "headers": {"content-type": "application/json"}}, 400, ["empty body"]),
    ("not a list", {"json": {"inputs": "just one"}}, 422, ["inputs", "array"]),
    ("a number", {"json": {"inputs": ["fine", 3]}}, 422, ["inputs[1]", "got int"]),
    ("unknown field", {"json": {"inputs": ["a"], "model": "x"}}, 422, ["model", "not permitted"]),
    ("no inputs", {"json": {"inputs": []}}, 422, ["inputs is empty"]),
    ("bad base64", {"json": {"inputs": [{"image": "***"}]}}, 422, ["inputs[0].image", "base64"]),
    ("an image to a text model", {"json": {"inputs": [{"image": base64.b64encode(_bomb_png(8)).decode()}]}}, 422,
     ["embeds texts"]),
    ("non-image upload", {"files": [("inputs", ("notes.txt", b"plain words", "text/plain"))]}, 415,
     ["inputs[0] is not an image"]),
    ("non-image base64", {"json": {"inputs": [{"image": base64.b64encode(b"%PDF-1.4 ...").decode()}]}}, 415,
     ["not an image"]),
    ("decompression bomb", {"json": {"inputs": [{"image": base64.b64encode(_bomb_png()).decode()}]}}, 413,
     ["inputs[0]", "decompression bomb"]),
    ("decompression bomb upload", {"files": [("inputs", ("bomb.png", _bomb_png(), "image/png"))]}, 413,
     ["decompression bomb"]),
    ("a 10 MB text", {"json": {"inputs": ["x" * 10_000_000]}}, 413, ["inputs[0] has 10,000,000 characters"]),
    ("10,000 inputs", {"json": {"inputs": ["word"] * 10_000}}, 413, ["10,000 inputs", "--max-inputs"]),
    ("a body over the limit", {"json": {"inputs": ["y" * (17 << 20)]}}, 413, ["request body", "at most"]),
    ("unknown form field", {"data": {"texts": "a"}, "files": [("inputs", ("a.png", _bomb_png(8), "image/png"))]},
     422, ["unknown form field 'texts'"]),
])
def test_bad_inputs_get_a_4xx_naming_the_problem(server: Any, name: str, request_kwargs: dict[str, Any],
                                                  status: int, words: list[str]) -> None:
    assert_error(post(server, "/v1/embed", **request_kwargs), status, *words)
    still_serving(server)


def test_bad_search_and_predict_requests(server: Any) -> None:
    assert_error(post(server, "/v1/search", json={"dataset": "nope", "queries": ["a"]}), 404, "no dataset 'nope'")
    assert_error(post(server, "/v1/search", json={"dataset": "words", "queries": ["a"], "k": "5"}), 422, "k")
    assert_error(post(server, "/v1/search", json={"dataset": "words", "queries": ["a"], "k": 0}), 422, "k")
    assert_error(post(server, "/v1/search", json={"dataset": "words", "queries": ["row:99"]}), 422, "row:99")
    assert_error(post(server, "/v1/search", json={"queries": ["a"]}), 422, "dataset")
    assert_error(post(server, "/v1/predict", json={"head": "other", "inputs": ["a"]}), 404, "no head 'other'",
                 "sentiment")
    assert_error(post(server, "/v1/predict", json={"inputs": [""]}), 422, "empty text")
    still_serving(server)
    assert post(server, "/v1/search", json={"dataset": "words", "queries": ["a"], "k": 2}).status_code == 200


def test_one_bad_input_fails_only_its_own_request_in_a_batch(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    service = server.app.state.service
    with Running(config(store["cache"], max_wait_ms=300, max_batch_size=64), service=service) as running:
        def call(inputs: list[str]) -> httpx.Response:
            return httpx.post(f"{running.url}/v1/embed", json={"inputs": inputs}, timeout=60)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, [["good"], [""], ["bad", "fine"], ["excellent"]]))
    assert [a.status_code for a in answers] == [200, 422, 200, 200]
    assert "#0" in answers[1].json()["message"] and "empty text" in answers[1].json()["message"]
    alone = post(server, "/v1/embed", json={"inputs": ["good", "bad", "fine", "excellent"]}).json()["vectors"]
    assert [answers[0].json()["vectors"][0], *answers[2].json()["vectors"], answers[3].json()["vectors"][0]] == alone


# -- the token -------------------------------------------------------------------------------------------------
def test_token_guards_every_v1_route(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    with Running(config(store["cache"], token=TOKEN), service=server.app.state.service) as running:
        url = running.url
        for method, path, kwargs in [("POST", "/v1/embed", {"json": {"inputs": ["a"]}}),
                                     ("POST", "/v1/search", {"json": {"dataset": "words", "queries": ["a"]}}),
                                     ("POST", "/v1/predict", {"json": {"inputs": ["a"]}}),
                                     ("GET", "/v1/datasets/words/items/0", {}), ("GET", "/v1/info", {})]:
            missing = httpx.request(method, url + path, **kwargs)
            assert_error(missing, 401, "Authorization: Bearer")
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert_error(httpx.request(method, url + path, headers={"Authorization": "Bearer wrong"}, **kwargs),
                         401, "wrong token")
            assert_error(httpx.request(method, url + path, headers={"Authorization": f"Basic {TOKEN}"}, **kwargs),
                         401, "Bearer")
            ok = httpx.request(method, url + path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
            assert ok.status_code == 200, ok.text
        assert httpx.get(url + "/healthz").status_code == 200 and httpx.get(url + "/readyz").status_code == 200


# -- batching and back-pressure --------------------------------------------------------------------------------
class Slowed:
    """The loaded service, with each model call slowed down (so requests pile up in the queue)."""

    def __init__(self, service: Any, seconds: float):
        self.service = service
        self.seconds = seconds
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    def run(self, key: Any, jobs: Any) -> Any:
        time.sleep(self.seconds)
        self.calls.append(len(jobs))
        return self.service.run(key, jobs)


def test_concurrent_requests_are_coalesced_into_batches(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    slowed = Slowed(server.app.state.service, 0.2)
    texts = [f"text number {i}" for i in range(12)]
    with Running(config(store["cache"], max_wait_ms=50, max_batch_size=64), service=slowed) as running:  # type: ignore[arg-type]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda t: httpx.post(f"{running.url}/v1/embed", json={"inputs": [t]}, timeout=60),
                                    texts))
    assert all(a.status_code == 200 for a in answers)
    assert len(slowed.calls) < len(texts) and max(slowed.calls) > 1  # fewer model calls than requests
    alone = post(server, "/v1/embed", json={"inputs": texts}).json()["vectors"]
    assert [a.json()["vectors"][0] for a in answers] == alone  # each its own answer


@pytest.mark.parametrize("streams", [1, 2])
def test_a_batch_runs_its_forwards_streams_at_a_time_each_on_its_share_of_threads(
        store: dict[str, Any], server: Any, streams: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts sorted by length into forwards of at most 256 padded tokens, ``--streams`` of them at once
    (as extract runs its streams), each forward on the worker's threads divided among the streams."""
    import torch

    from hubtune.serve.runner import Running

    service = server.app.state.service
    backbone = service.keeper.get("text")
    original = backbone.embed_batch
    lock = threading.Lock()
    seen = {"now": 0, "most": 0, "forwards": 0, "tokens": 0, "threads": set()}

    def watched(batch: dict) -> Any:
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            seen["forwards"] += 1
            seen["tokens"] = max(seen["tokens"], int(batch["input_ids"].numel()))
            seen["threads"].add(torch.get_num_threads())
        time.sleep(0.05)
        try:
            return original(batch)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(backbone, "embed_batch", watched)
    monkeypatch.setattr(service.config, "streams", streams)  # the shared service's own config (--streams)
    texts = [" ".join(["stream"] * (i % 7 * 9 + 1)) + f" {streams} {i}" for i in range(40)]  # new to the store
    with Running(config(store["cache"]), service=service) as running:
        answer = httpx.post(f"{running.url}/v1/embed", json={"inputs": texts}, timeout=120)
    assert answer.status_code == 200 and len(answer.json()["vectors"]) == len(texts)
    assert seen["forwards"] > 2 and seen["tokens"] <= 256  # cut by the token budget, not one forward of 40
    assert seen["most"] == streams
    total = torch.get_num_threads()
    assert seen["threads"] == {max(1, total // streams)}


def test_a_full_queue_answers_503_and_loses_no_accepted_request(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    slowed = Slowed(server.app.state.service, 0.3)
    texts = [f"queued text {i}" for i in range(16)]
    expected = post(server, "/v1/embed", json={"inputs": texts}).json()["vectors"]
    with Running(config(store["cache"], max_queue=2, max_batch_size=1, max_wait_ms=0), service=slowed) as running:  # type: ignore[arg-type]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda t: httpx.post(f"{running.url}/v1/embed", json={"inputs": [t]}, timeout=60),
                                    texts))
        still = httpx.post(f"{running.url}/v1/embed", json={"inputs": ["after"]}, timeout=60)
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503} and statuses.count(503) >= 1 and statuses.count(200) >= 3, statuses
    for text, answer, want in zip(texts, answers, expected):
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert_error(answer, 503, "--max-queue")
        else:
            assert answer.json()["vectors"] == [want], text  # its own answer, not a neighbour's
    assert still.status_code == 200
    assert len(slowed.calls) == statuses.count(200) + 1  # every accepted request reached the model


def test_a_request_past_the_timeout_gets_504(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    with Running(config(store["cache"], request_timeout=0.2), service=Slowed(server.app.state.service, 1.0)) as running:  # type: ignore[arg-type]
        late = httpx.post(f"{running.url}/v1/embed", json={"inputs": ["slow"]}, timeout=60)
        assert_error(late, 504, "no answer within 0.2 s", "--request-timeout")
        assert httpx.get(f"{running.url}/healthz").status_code == 200


def test_readyz_is_503_until_loaded(store: dict[str, Any], server: Any) -> None:
    from hubtune.serve.runner import Running

    gate = threading.Event()
    loaded = server.app.state.service

    class Loading:
        """The loaded service, as if its model took until ``gate`` opens to load."""

        def __init__(self) -> None:
            self.ready = False
            self.error = None

        def __getattr__(self, name: str) -> Any:
            return getattr(loaded, name)

        def load(self) -> None:
            gate.wait(30)
            self.ready = True

    running = Running(config(store["cache"]), service=Loading())  # type: ignore[arg-type]
    running.thread.start()
    try:
        while not running.server.started:
            time.sleep(0.01)
        assert httpx.get(running.url + "/healthz").status_code == 200
        assert_error(httpx.get(running.url + "/readyz"), 503, "loading")
        waiting = httpx.post(running.url + "/v1/embed", json={"inputs": ["a"]})
        assert_error(waiting, 503, "loading") and waiting.headers["retry-after"]
        gate.set()
        deadline = time.monotonic() + 30
        while httpx.get(running.url + "/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.post(running.url + "/v1/embed", json={"inputs": ["a"]}).status_code == 200
    finally:
        gate.set()
        running.stop()


# -- starting ----------------------------------------------------------------------------------------------------
def _foreign_head(store: dict[str, Any]) -> tuple[Path, str]:
    head = store["root"] / "foreign"
    if not head.is_dir():
        import shutil

        shutil.copytree(store["head"], head)
        manifest = json.loads((head / "head.json").read_text())
        manifest["model"]["fingerprint"] = "0" * 32  # as if trained on another model's vectors
        (head / "head.json").write_text(json.dumps(manifest))
    return head, "0" * 32


def test_a_head_of_another_backbone_is_refused_at_start(store: dict[str, Any]) -> None:
    from hubtune.errors import ServeError
    from hubtune.serve.runner import Running

    head, foreign = _foreign_head(store)
    with pytest.raises(ServeError) as refused:
        Running(config(store["cache"], heads=[str(head)])).start()
    assert foreign in str(refused.value) and store["export"]["fingerprint"] in str(refused.value)


def test_a_fine_tuned_head_is_refused_saying_why(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from hubtune.errors import ServeError
    from hubtune.heads import use

    tuned = SimpleNamespace(kind="finetune", model={"fingerprint": "f" * 32, "ref": MODEL})
    monkeypatch.setattr(use, "load_head", lambda folder, cache: tuned)
    with pytest.raises(ServeError, match="fine-tuned: it embeds with its own trained blocks") as refused:
        server.app.state.service.open_head("tuned", Path("tuned"))
    assert "f" * 32 in str(refused.value) and "hubtune predict" in str(refused.value)


def test_a_port_in_use_a_missing_store_or_dataset_and_missing_ray_are_clear_errors(
        tmp_path: Path, store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from hubtune.errors import ServeError
    from hubtune.serve import ray_engine
    from hubtune.serve.runner import Running, bind
    from hubtune.serve.service import Service

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ServeError, match=r"cannot listen on 127.0.0.1:\d+: .*--port 0 picks a free port"):
            bind("127.0.0.1", taken.getsockname()[1])
    nowhere = tmp_path / "no-store"
    with pytest.raises(ServeError, match="no embedding store at .*no-store"):
        Service(config(nowhere, datasets=["words"])).load()
    assert not nowhere.exists()  # a mistyped --cache leaves no empty store behind
    loads: list[str] = []
    monkeypatch.setattr("hubtune.api.load_backbone", lambda *a, **k: loads.append("model"))
    with pytest.raises(ServeError, match="no dataset 'wordz' in .*it holds: .*words"):
        Running(config(store["cache"], datasets=["wordz"])).start()
    assert loads == []  # refused before the model loads
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    with pytest.raises(ServeError, match=r"pip install 'hubtune\[ray\]'"):
        ray_engine.serve_on_ray(config(tmp_path / "c"), 2)


def test_missing_serve_extra_names_the_install(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from hubtune.cli.app import cli as group

    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(group, ["serve", MODEL, "--cache", str(store["cache"])])
    assert result.exit_code == 2 and "pip install 'hubtune[serve]'" in result.output


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hubtune", "serve", *args], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _records(process: subprocess.Popen) -> Any:
    """The JSON lines of the server's stderr, as they come (other libraries' lines skipped)."""
    lines = []
    while True:
        line = process.stderr.readline()  # type: ignore[union-attr]
        assert line, f"the server exited: {''.join(lines)}"
        lines.append(line)
        try:
            yield json.loads(line)
        except ValueError:
            continue


@pytest.mark.slow
def test_the_command_serves_logs_json_and_refuses_a_foreign_head(store: dict[str, Any]) -> None:
    """The console command itself: the startup line with the URL, JSON access lines with latency and
    batch size, SIGTERM (what systemd, Docker and Kubernetes send) stops it cleanly, logging "stopped", as
    Ctrl-C does; and a foreign head stops it at start, naming both fingerprints."""
    process = _spawn(MODEL, "--cache", str(store["cache"]), "--dataset", "words", "--port", "0", "--json-logs",
                     "--token-env", "MY_TOKEN", *PINNED, env={"MY_TOKEN": TOKEN})
    try:
        url = next(record["url"] for record in _records(process) if record.get("event") == "ready")
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(url + "/v1/embed", json={"inputs": ["a", "b"]}, headers=headers).status_code == 200
        assert httpx.post(url + "/v1/embed", json={"inputs": ["a"]}).status_code == 401
        records = _records(process)
        access = [next(r for r in records if r.get("event") == "access") for _ in range(2)]
        assert access[0]["event"] == "access" and access[0]["path"] == "/v1/embed" and access[0]["status"] == 200
        assert access[0]["batch_size"] == 2 and access[0]["ms"] > 0 and access[1]["status"] == 401
    finally:
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=90)[1]
    assert process.returncode == 0, rest
    assert any(json.loads(line).get("message") == "hubtune serve: stopped" for line in rest.splitlines()
               if line.startswith("{")), rest

    head, foreign = _foreign_head(store)
    refused = _spawn(MODEL, "--cache", str(store["cache"]), "--head", str(head), "--port", "0", *PINNED)
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2, stderr
    assert foreign in stderr and store["export"]["fingerprint"] in stderr and "Traceback" not in stderr
