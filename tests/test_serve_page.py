"""The page at ``/`` of ``hubtune serve`` in a real headless browser (Debian's chromium, driven by playwright's
Python client through ``executable_path``), against the real server on 127.0.0.1 with a tiny CLIP.

One server, started with a token: the page asks for it, then a text query lists the k nearest images with
their thumbnails and scores (the same rows and scores as the API's own answer), a dropped image and one
chosen with the file picker list their neighbours and each head's top classes (as /v1/predict answers),
and an API error shows in the page. A screenshot of each step goes to ``$HUBTUNE_SCREENSHOTS`` (else the
test's tmp_path); the paths are printed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.serve_pages import cli_json, launched_browser, search_done, served_url, watched_page
from tests.tiny_clip import tiny_clip_repo

PINNED = ["--precision", "fp32", "--device", "cpu"]
TOKEN = "page-test-token"
K = 6
SHAPES = {"circle": "ellipse", "square": "rectangle", "triangle": "polygon"}
CAPTIONS = [(f"a {colour} {shape} on a {ground} background", shape) for shape in SHAPES
            for colour, ground in (("red", "white"), ("small blue", "grey"), ("dark green", "pale"))]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_browser()


def _picture(shape: str, seed: int) -> bytes:
    """A 64x64 PNG: one coloured shape of the class on a light background (thumbnails people can tell apart)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(215, 250, 3))
    colour = tuple(int(v) for v in rng.integers(20, 200, 3))
    image = Image.new("RGB", (64, 64), background)
    draw = ImageDraw.Draw(image)
    x, y = (int(v) for v in rng.integers(8, 20, 2))
    size = int(rng.integers(30, 44))
    box = (x, y, min(x + size, 60), min(y + size, 60))
    if shape == "triangle":
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    else:
        getattr(draw, SHAPES[shape])(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(test_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with an image folder (circle/square/triangle) and a table of captions embedded by the tiny
    CLIP, and two heads on the images (knn, zeroshot)."""
    ref = f"hf:{tiny_clip_repo(test_root)}"
    root = tmp_path_factory.mktemp("serve-page")
    images = root / "shapes"
    for c, shape in enumerate(SHAPES):
        (images / shape).mkdir(parents=True)
        for i in range(5):
            (images / shape / f"{shape}-{i}.png").write_bytes(_picture(shape, 10 * c + i))
    cache = root / "cache"
    summary = cli_json("extract", ref, str(images), "--cache", str(cache), "--dataset", "shapes", "--no-progress", *PINNED)
    assert summary["failed"] == 0 and summary["computed"] == 15
    table = root / "captions.jsonl"
    table.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in CAPTIONS))
    summary = cli_json("extract", ref, str(table), "--cache", str(cache), "--dataset", "captions", "--no-progress", *PINNED)
    assert summary["failed"] == 0 and summary["computed"] == len(CAPTIONS)
    lookup = ["--cache", str(cache), "--model", ref, "--dataset", "shapes"]
    heads = []
    for kind in ("knn", "zeroshot"):
        cli_json("train", *lookup, "--head", kind, "--out", str(root / kind))
        heads.append(root / kind)
    queries = {"drop": _picture("circle", 99), "pick": _picture("triangle", 98)}
    return {"ref": ref, "cache": cache, "heads": heads, "root": root, "queries": queries}


@pytest.fixture(scope="module")
def server(served: dict[str, Any]) -> Iterator[str]:
    """``hubtune serve`` in a subprocess on 127.0.0.1 (``--port 0``: a free port, read from its log), with a
    token; stopped after the module."""
    heads = [arg for head in served["heads"] for arg in ("--head", str(head))]
    command = [sys.executable, "-m", "hubtune", "serve", served["ref"], "--cache", str(served["cache"]),
               "--dataset", "shapes", "--dataset", "captions", *heads, "--host", "127.0.0.1", "--port", "0",
               "--token-env", "HUBTUNE_PAGE_TEST_TOKEN", *PINNED]
    yield from served_url(command, served["root"] / "serve.log", {**os.environ, "HUBTUNE_PAGE_TEST_TOKEN": TOKEN})


def _api(url: str, path: str, body: dict | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = (httpx.post(url + path, json=body, headers=headers, timeout=60) if body is not None
                else httpx.get(url + path, headers=headers, timeout=60))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HUBTUNE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _hits(page: Any) -> list[tuple[int, float]]:
    return [(int(row), float(score)) for row, score in
            page.eval_on_selector_all("#results li.hit", "items => items.map(i => [i.dataset.row, i.dataset.score])")]


def _wait_thumbnails(page: Any, count: int) -> None:
    """Every result shows a loaded image thumbnail with an alt text."""
    page.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('#results li.hit .media img')];
                  return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0 && i.alt); }""",
        arg=count, timeout=30_000)


def _heads(page: Any) -> dict[str, list[tuple[str, float]]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#head-list .head')].map(h =>
        [h.dataset.head, [...h.querySelectorAll('li')].map(li => [li.dataset.label, Number(li.dataset.score)])]))""")


def _assert_hits(page: Any, expected: list[dict]) -> None:
    shown = _hits(page)
    assert [row for row, _ in shown] == [hit["row"] for hit in expected]
    assert [score for _, score in shown] == pytest.approx([hit["score"] for hit in expected], abs=1e-6)
    labels = page.eval_on_selector_all("#results li.hit .label", "items => items.map(i => i.textContent)")
    assert labels == [hit["label"] for hit in expected]


def _assert_heads(page: Any, url: str, info: dict, image: dict) -> None:
    """Each head's top classes as /v1/predict answers them, most probable first."""
    page.wait_for_function(f"document.querySelectorAll('#head-list .head').length === {len(info['heads'])}")
    shown = _heads(page)
    for head in info["heads"]:
        name = head["name"]
        (prediction,) = _api(url, "/v1/predict", {"head": name, "inputs": [image]})["predictions"]
        pairs = sorted(prediction["scores"].items(), key=lambda p: -p[1])
        assert [label for label, _ in shown[name]] == [label for label, _ in pairs[:5]]
        assert [p for _, p in shown[name]] == pytest.approx([p for _, p in pairs[:5]], abs=1e-6)
        assert shown[name][0][0] == prediction["label"]


@pytest.mark.slow
def test_the_page_searches_by_text_and_by_image(browser: Any, server: str, served: dict[str, Any],
                                                shots: Path) -> None:
    info = _api(server, "/v1/info")
    assert [d["name"] for d in info["datasets"]] == ["shapes", "captions"]
    assert {h["name"]: h["inputs"] for h in info["heads"]} == {"knn": ["image"], "zeroshot": ["image"]}
    written = []

    def shot(page: Any, name: str) -> None:
        path = shots / f"serve-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        written.append(path)
        print(f"screenshot: {path}")

    errors: list[str] = []
    page = watched_page(browser, errors)
    page.goto(server + "/")

    # 1. the server wants a token: the page asks for it (the /v1 routes answered 401)
    page.get_by_label("Access token").wait_for(state="visible")
    assert "401" in page.inner_text("#error")
    shot(page, "1-token")
    page.get_by_label("Access token").fill(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('#dataset option').length > 0")
    assert page.is_hidden("#error") and page.is_hidden("#token-form")
    assert page.evaluate("sessionStorage.getItem('hubtune.token')") == TOKEN
    page.get_by_label("Dataset").select_option("shapes")
    page.get_by_label("k", exact=True).fill(str(K))
    assert page.is_visible("#drop")  # a text-image model takes images too

    # 2. a text query: the k nearest images, as the API answers them
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("a photo of a circle")
    page.get_by_label("Search", exact=True).press("Enter")
    search_done(page, before)
    expected = _api(server, "/v1/search", {"dataset": "shapes", "queries": ["a photo of a circle"], "k": K})
    _assert_hits(page, expected["results"][0])
    _wait_thumbnails(page, K)
    assert "circle" in page.inner_text("#status")
    shot(page, "2-text")

    # 3. an image dropped on the drop zone (a DataTransfer with a File): its neighbours and the heads
    dropped = base64.b64encode(served["queries"]["drop"]).decode()
    before = page.evaluate("window.__searches")
    page.evaluate("""b64 => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'circle.png', {type: 'image/png'}));
        const zone = document.getElementById('drop');
        for (const type of ['dragenter', 'dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", dropped)
    search_done(page, before)
    assert page.evaluate("window.__searches") == before + 1  # one drop, one search
    image = {"image": dropped}
    expected = _api(server, "/v1/search", {"dataset": "shapes", "queries": [image], "k": K})
    _assert_hits(page, expected["results"][0])
    _wait_thumbnails(page, K)
    _assert_heads(page, server, info, image)
    assert page.get_attribute("#query-image", "alt") == "The query image: circle.png"
    shot(page, "3-drop")

    # 4. an image chosen with the file picker
    before = page.evaluate("window.__searches")
    page.set_input_files("#file", files=[{"name": "triangle.png", "mimeType": "image/png",
                                          "buffer": served["queries"]["pick"]}])
    search_done(page, before)
    image = {"image": base64.b64encode(served["queries"]["pick"]).decode()}
    expected = _api(server, "/v1/search", {"dataset": "shapes", "queries": [image], "k": K})
    _assert_hits(page, expected["results"][0])
    _wait_thumbnails(page, K)
    _assert_heads(page, server, info, image)
    shot(page, "4-pick")

    # 5. a text dataset: the nearest captions, shown as text
    page.get_by_label("Dataset").select_option("captions")
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("a green square")
    page.get_by_role("button", name="Search", exact=True).click()
    search_done(page, before)
    expected = _api(server, "/v1/search", {"dataset": "captions", "queries": ["a green square"], "k": K})
    _assert_hits(page, expected["results"][0])
    page.wait_for_function(f"document.querySelectorAll('#results .media .text').length === {K}")
    texts = page.eval_on_selector_all("#results .media .text", "items => items.map(i => i.textContent)")
    assert texts == [CAPTIONS[hit["row"]][0] for hit in expected["results"][0]]
    assert page.is_hidden("#heads")  # the heads classify images, not texts
    shot(page, "5-captions")

    # 6. the API's error, shown as it answered (an unknown dataset: 404 with its JSON detail)
    page.evaluate("document.getElementById('dataset').add(new Option('no-such-dataset', 'no-such-dataset'))")
    page.get_by_label("Dataset").select_option("no-such-dataset")
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("a square")
    page.get_by_role("button", name="Search", exact=True).click()
    search_done(page, before)
    page.wait_for_selector("#error", state="visible")
    message = page.inner_text("#error")
    assert message.startswith("4") and "no-such-dataset" in message, message
    assert page.locator("#results li").count() == 0
    shot(page, "6-error")
    # every control has a label; the file picker stays reachable by keyboard
    assert page.evaluate("[...document.querySelectorAll('input, select')].every(e => e.labels.length > 0)")
    page.focus("#file")
    assert page.evaluate("document.activeElement.id") == "file"
    assert not errors, errors
    assert all(path.stat().st_size > 1000 for path in written)


@pytest.mark.slow
def test_the_page_shows_loading_a_wrong_token_and_an_overloaded_server(browser: Any, server: str,
                                                                       shots: Path) -> None:
    """While the model loads (503 + Retry-After on /v1/info) the page says so and asks again; a wrong token
    is the server's 401; a full queue's 503 shows its Retry-After. The two 503s are played by playwright's
    routing (the real server is loaded and idle); the 401s are the server's own."""
    errors: list[str] = []
    page = watched_page(browser, errors)
    answered = {"info": 0, "search": 0}
    loading = {"error": "Overloaded", "message": "the service is still loading the model; retry shortly",
               "status": 503}

    def info(route: Any) -> None:
        answered["info"] += 1
        if answered["info"] == 1:
            route.fulfill(status=503, json=loading, headers={"Retry-After": "1"})
        else:
            route.continue_()

    page.route("**/v1/info", info)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('loading')")
    assert "still loading" in page.inner_text("#model") and page.is_hidden("#error")
    # the page asks again after Retry-After: now the server's own 401 (no token yet)
    page.get_by_label("Access token").wait_for(state="visible", timeout=10_000)
    assert answered["info"] == 2

    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Use token").click()
    page.wait_for_function("document.getElementById('error').textContent.includes('wrong token')")
    assert page.inner_text("#error").startswith("401") and page.is_visible("#token-form")
    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.wait_for_function("document.querySelectorAll('#dataset option').length > 0")

    full = {"error": "Overloaded", "message": "the request queue is full (256 waiting); retry later", "status": 503}
    page.route("**/v1/search", lambda route: route.fulfill(status=503, json=full, headers={"Retry-After": "3"}))
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("a circle")
    page.get_by_label("Search", exact=True).press("Enter")
    search_done(page, before)
    assert page.inner_text("#error") == "503: the request queue is full (256 waiting); retry later (retry after 3 s)"
    path = shots / "serve-7-overloaded.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")

    page.unroute("**/v1/search")
    before = page.evaluate("window.__searches")
    page.get_by_role("button", name="Search", exact=True).click()
    search_done(page, before)
    assert page.is_hidden("#error") and len(_hits(page)) == 8  # the page's default k
    assert not errors, errors
