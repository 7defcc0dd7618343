"""`hubtune serve` on image models: a tiny timm ViT (random weights) and a tiny two-tower CLIP.

Images go as ``{"image": "<base64>"}`` in JSON or as multipart uploads; the answers equal the CLI's
`export`, `search --json` (which reads the same images from their paths) and `predict --json`; an item
of an image dataset is served as a JPEG thumbnail, refused once its file changed; with a text-image
model a text query searches an image dataset, as `hubtune search` does.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import pytest

from tests import tiny_clip

MODEL = "timm:test_vit"
PINNED = ["--weights", "random:3", "--precision", "fp32", "--device", "cpu"]


def cli(*args: str) -> Any:
    from click.testing import CliRunner

    from hubtune.cli.app import cli as group

    result = CliRunner().invoke(group, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def b64(data: bytes) -> dict[str, str]:
    return {"image": base64.b64encode(data).decode()}


def running(ref: str, cache: Path, options: dict[str, Any], **settings: Any) -> Any:
    from hubtune.backbone import LoadOptions
    from hubtune.serve.config import ServeConfig
    from hubtune.serve.runner import Running

    return Running(ServeConfig(ref=ref, cache=cache, options=LoadOptions(**options), port=0, **settings))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, make_image_folder: Callable[..., Path],
          png: Callable[..., bytes]) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("serve-images")
    pics = make_image_folder(root / "pics", per_class=4)
    cache = root / "cache"
    cli("extract", MODEL, str(pics), "--cache", str(cache), *PINNED, "--no-progress")
    exported = cli("export", "--cache", str(cache), "--model", MODEL, "--dataset", "pics", "--out",
                   str(root / "export"), *PINNED)
    cli("train", "--cache", str(cache), "--model", MODEL, "--dataset", "pics", "--head", "knn", "--k", "3",
        "--out", str(root / "kind"), *PINNED)
    items = [json.loads(line) for line in (root / "export" / "items.jsonl").read_text().splitlines()]
    new = []
    for seed in (901, 902):
        path = root / f"new{seed}.png"
        path.write_bytes(png(seed, (52, 44)))
        new.append(path)
    return {"root": root, "cache": cache, "export": exported, "items": items, "new": new,
            "vectors": np.load(root / "export" / "embeddings.npy"), "head": root / "kind"}


@pytest.fixture(scope="module")
def server(store: dict[str, Any]) -> Any:
    with running(MODEL, store["cache"], {"weights": "random:3", "precision": "fp32", "device": "cpu"},
                 datasets=["pics"], heads=[str(store["head"])]) as served:
        served.client = httpx.Client(base_url=served.url, timeout=60)
        yield served
        served.client.close()


def test_image_embed_equals_export_in_json_and_multipart(server: Any, store: dict[str, Any]) -> None:
    files = [Path(item["origin"]).read_bytes() for item in store["items"]]
    as_json = server.client.post("/v1/embed", json={"inputs": [b64(data) for data in files]})
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["fingerprint"] == store["export"]["fingerprint"] and body["dim"] == store["vectors"].shape[1]
    np.testing.assert_array_equal(np.array(body["vectors"], dtype=np.float32), store["vectors"])
    uploads = [("inputs", (f"{i}.png", data, "image/png")) for i, data in enumerate(files)]
    as_form = server.client.post("/v1/embed", files=uploads)
    assert as_form.status_code == 200 and as_form.json() == body


def test_image_search_equals_the_cli(server: Any, store: dict[str, Any]) -> None:
    paths = [*store["new"], Path(store["items"][5]["origin"])]
    response = server.client.post("/v1/search", json={"dataset": "pics", "k": 3,
                                                      "queries": [*(b64(p.read_bytes()) for p in paths), "row:2"]})
    assert response.status_code == 200, response.text
    want = cli("search", "--cache", str(store["cache"]), "--model", MODEL, "--dataset", "pics", "-k", "3",
               *map(str, paths), "row:2", *PINNED)
    got = response.json()["results"]
    assert [[(h["row"], h["label"], h["score"], h["origin"]) for h in hits] for hits in got] == \
           [[(e["row"], e["label"], e["score"], e["item"]) for e in hits] for hits in want]
    assert got[2][0]["row"] == 5 and got[3][0]["row"] == 2
    assert all(hit["key"] == store["items"][hit["row"]]["key"] for hits in got for hit in hits)
    uploaded = server.client.post("/v1/search", data={"dataset": "pics", "k": "3"},
                                  files=[("queries", ("q.png", paths[0].read_bytes(), "image/png"))])
    assert uploaded.status_code == 200 and uploaded.json()["results"] == got[:1]


def test_image_predict_equals_the_cli(server: Any, store: dict[str, Any]) -> None:
    uploads = [("inputs", (p.name, p.read_bytes(), "image/png")) for p in store["new"]]
    response = server.client.post("/v1/predict", data={"head": "kind"}, files=uploads)
    assert response.status_code == 200, response.text
    want = cli("predict", str(store["head"]), *map(str, store["new"]), "--cache", str(store["cache"]))
    got = response.json()["predictions"]
    assert [(p["label"], p["score"]) for p in got] == [(w["label"], w["score"]) for w in want]
    assert all(set(p["scores"]) == {"cat", "dog"} for p in got)


def test_texts_to_an_image_model_and_broken_images_are_refused(server: Any, png: Callable[..., bytes]) -> None:
    def error(response: httpx.Response, status: int, *words: str) -> None:
        assert response.status_code == status, response.text
        assert all(word in response.json()["message"] for word in words), response.json()

    error(server.client.post("/v1/embed", json={"inputs": ["a cat"]}), 422, "embeds images")
    error(server.client.post("/v1/embed", json={"inputs": ["a cat", b64(png(1))]}), 422, "mix texts and images")
    error(server.client.post("/v1/search", json={"dataset": "pics", "queries": ["a cat"]}), 422,
          "queries[0] is a text", "searched by images")
    error(server.client.post("/v1/predict", json={"inputs": ["a cat"]}), 422, "classifies images")
    whole = png(7)
    error(server.client.post("/v1/embed", json={"inputs": [b64(png(8)), b64(whole[: len(whole) // 2])]}), 422,
          "#1", "image")
    assert server.client.post("/v1/embed", json={"inputs": [b64(whole)]}).status_code == 200


def test_an_item_is_a_thumbnail_and_a_changed_file_is_refused(server: Any, store: dict[str, Any]) -> None:
    from PIL import Image

    response = server.client.get("/v1/datasets/pics/items/1")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    original = Image.open(store["items"][1]["origin"])
    assert thumb.format == "JPEG" and thumb.size == original.size  # small images are not enlarged
    path = Path(store["items"][6]["origin"])
    kept = path.read_bytes()
    try:
        path.write_bytes(store["new"][0].read_bytes())  # another picture under the recorded path
        refused = server.client.get("/v1/datasets/pics/items/6")
        assert refused.status_code == 404 and "changed since it was extracted" in refused.json()["message"]
    finally:
        path.write_bytes(kept)
    assert server.client.get("/v1/datasets/pics/items/6").status_code == 200


@pytest.mark.slow
def test_text_queries_search_images_with_a_text_image_model(test_root: Path, tmp_path: Path,
                                                             make_image_folder: Callable[..., Path]) -> None:
    ref = f"hf:{tiny_clip.tiny_clip_repo(test_root)}"
    pics = make_image_folder(tmp_path / "pics", per_class=3)
    cache = tmp_path / "cache"
    pinned = ["--precision", "fp32", "--device", "cpu"]
    cli("extract", ref, str(pics), "--cache", str(cache), *pinned, "--no-progress")
    queries = ["a photo of a cat", "dog"]
    image = pics / "dog" / "001.png"
    want = cli("search", "--cache", str(cache), "--model", ref, "--dataset", "pics", "-k", "3", *queries,
               str(image), *pinned)
    with running(ref, cache, {"precision": "fp32", "device": "cpu"}, datasets=["pics"]) as served:
        info = httpx.get(served.url + "/v1/info").json()
        assert info["datasets"][0]["queries"] == ["image", "text"]
        response = httpx.post(served.url + "/v1/search", json={"dataset": "pics", "k": 3,
                                                               "queries": [*queries, b64(image.read_bytes())]})
        texts = httpx.post(served.url + "/v1/embed", json={"inputs": queries})
    assert response.status_code == 200, response.text
    assert [[(h["row"], h["score"]) for h in hits] for hits in response.json()["results"]] == \
           [[(e["row"], e["score"]) for e in hits] for hits in want]
    assert texts.status_code == 200 and len(texts.json()["vectors"]) == 2
    text_tower = cli("info", ref, "--tower", "text", *pinned)  # the text tower shares the loaded weights
    assert texts.json()["fingerprint"] == text_tower["fingerprint"]
