"""The page at ``/`` of ``hubtune serve`` for models of ONE input kind, in a real headless browser (Debian's
chromium, driven by playwright's Python client), against the real server in a subprocess on 127.0.0.1.

A text-only model (the embedded MiniLM, a table of short texts, a linear head): the drop zone is hidden and
a dropped image is ignored, the query box takes a text, its k nearest texts and their scores are the API's
own /v1/search answer, and the head's classes are /v1/predict's. An image-only model (a timm test ViT with
random weights, a folder of PNGs, a knn head): the query box is disabled and says the dataset is searched by
images, a dropped image lists its neighbours with thumbnails and the scores of /v1/search, and the head's
classes are /v1/predict's. A screenshot of each step goes to ``$HUBTUNE_SCREENSHOTS`` (else the test's
tmp_path); the paths are printed. The two-tower case (a tiny CLIP) is tests/test_serve_page.py.

Search with nothing to search asks for what the page takes: an image-only page asks for an image (it
once asked to "Type a query" in its disabled box).
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.serve_pages import cli_json, launched_browser, search_done, served_url, watched_page

TEXT_MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
TEXT_PINNED = ["--precision", "fp32", "--device", "cpu"]
IMAGE_MODEL = "timm:test_vit"
IMAGE_PINNED = ["--weights", "random:3", "--precision", "fp32", "--device", "cpu"]
K = 5
TEXTS = [(text, "pos") for text in ("a wonderful day", "delightful food", "an excellent film", "superb service",
                                     "a lovely garden", "brilliant music", "joyful children", "fantastic news")]
TEXTS += [(text, "neg") for text in ("an awful day", "terrible food", "a horrible film", "dreadful service",
                                     "a miserable garden", "disgusting smell", "nasty weather", "tragic news")]
COLOURS = {"red": (200, 30, 30), "blue": (30, 40, 200)}

pytestmark = pytest.mark.slow  # two models, two servers and a browser: about a minute on 2 CPU cores


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_browser()


def _picture(colour: str, seed: int) -> bytes:
    """A 40x40 PNG: a disc of the class's colour (a little jittered) on a light background."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(220, 250, 3)))
    fill = tuple(int(min(255, max(0, c + v))) for c, v in zip(COLOURS[colour], rng.integers(-25, 25, 3)))
    x, y = (int(v) for v in rng.integers(4, 12, 2))
    ImageDraw.Draw(image).ellipse((x, y, x + 24, y + 24), fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _serve(root: Path, ref: str, cache: Path, dataset: str, head: Path, pinned: list[str]) -> Iterator[str]:
    """``hubtune serve`` in a subprocess on 127.0.0.1 (``--port 0``: a free port, read from its log), no
    token; yields its URL once /readyz answers 200, stopped after."""
    command = [sys.executable, "-m", "hubtune", "serve", ref, "--cache", str(cache), "--dataset", dataset,
               "--head", str(head), "--host", "127.0.0.1", "--port", "0", *pinned]
    env = {k: v for k, v in os.environ.items() if k != "HUBTUNE_SERVE_TOKEN"}
    yield from served_url(command, root / "serve.log", env)


@pytest.fixture(scope="module")
def text_server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The text-only model serving a table of 16 short texts (pos/neg) and a linear head trained on it."""
    root = tmp_path_factory.mktemp("serve-page-text")
    table = root / "phrases.jsonl"
    table.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in TEXTS))
    cache = root / "cache"
    summary = cli_json("extract", TEXT_MODEL, str(table), "--cache", str(cache), "--no-progress", *TEXT_PINNED)
    assert summary["failed"] == 0 and summary["computed"] == len(TEXTS)
    cli_json("train", "--cache", str(cache), "--model", TEXT_MODEL, "--dataset", "phrases", "--head", "linear",
         "--out", str(root / "mood"), *TEXT_PINNED)
    for url in _serve(root, TEXT_MODEL, cache, "phrases", root / "mood", TEXT_PINNED):
        yield {"url": url, "root": root}


@pytest.fixture(scope="module")
def image_server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The image-only model serving a folder of 12 PNGs (red/blue discs) and a knn head trained on it."""
    root = tmp_path_factory.mktemp("serve-page-image")
    folder = root / "discs"
    for c, colour in enumerate(COLOURS):
        (folder / colour).mkdir(parents=True)
        for i in range(6):
            (folder / colour / f"{colour}-{i}.png").write_bytes(_picture(colour, 10 * c + i))
    cache = root / "cache"
    summary = cli_json("extract", IMAGE_MODEL, str(folder), "--cache", str(cache), "--no-progress", *IMAGE_PINNED)
    assert summary["failed"] == 0 and summary["computed"] == 12
    cli_json("train", "--cache", str(cache), "--model", IMAGE_MODEL, "--dataset", "discs", "--head", "knn",
         "--k", "3", "--out", str(root / "colour"), *IMAGE_PINNED)
    for url in _serve(root, IMAGE_MODEL, cache, "discs", root / "colour", IMAGE_PINNED):
        yield {"url": url, "root": root, "query": _picture("red", 99)}


def _api(url: str, path: str, body: dict | None = None) -> Any:
    import httpx

    response = httpx.post(url + path, json=body, timeout=60) if body is not None else httpx.get(url + path, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def shot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``shot(page, name)``: a full-page screenshot, its path printed."""
    folder = Path(os.environ.get("HUBTUNE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"serve-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        assert path.stat().st_size > 1000
        return path

    return take


def _ready(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('status').textContent === 'Ready.'", timeout=30_000)


def _drop(page: Any, png: bytes, name: str, target: str = "#drop") -> None:
    """Drop a PNG (a DataTransfer with a File) on ``target``, as a person dragging a file does."""
    page.evaluate("""([b64, name, target]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, {type: 'image/png'}));
        const zone = document.querySelector(target);
        for (const type of ['dragenter', 'dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
    }""", [base64.b64encode(png).decode(), name, target])


def _assert_hits(page: Any, expected: list[dict]) -> None:
    """The listed results are the API's rows, labels and scores: the exact score (``data-score``) and the
    3-decimal score the page shows."""
    shown = page.eval_on_selector_all("#results li.hit", """items => items.map(i => [Number(i.dataset.row),
        Number(i.dataset.score), i.querySelector('.score').textContent, i.querySelector('.label').textContent])""")
    assert [row for row, *_ in shown] == [hit["row"] for hit in expected]
    assert [score for _, score, *_ in shown] == pytest.approx([hit["score"] for hit in expected], abs=1e-6)
    assert [text for _, _, text, _ in shown] == [f"{hit['score']:.3f}" for hit in expected]
    assert [label for *_, label in shown] == [hit["label"] for hit in expected]


def _assert_heads(page: Any, url: str, query: Any, heads: list[str]) -> None:
    """Each head's top classes (most probable first) and probabilities are /v1/predict's for the query."""
    page.wait_for_function("document.querySelectorAll('#head-list .head li').length > 0", timeout=60_000)
    shown = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#head-list .head')].map(h =>
        [h.dataset.head, [...h.querySelectorAll('li')].map(li =>
           [li.dataset.label, Number(li.dataset.score), li.querySelector('.prob').textContent])]))""")
    assert sorted(shown) == sorted(heads)
    for name in heads:
        (prediction,) = _api(url, "/v1/predict", {"head": name, "inputs": [query]})["predictions"]
        pairs = sorted(prediction["scores"].items(), key=lambda p: -p[1])[:5]
        assert [label for label, *_ in shown[name]] == [label for label, _ in pairs]
        assert [p for _, p, _ in shown[name]] == pytest.approx([p for _, p in pairs], abs=1e-6)
        assert [text for *_, text in shown[name]] == [f"{100 * p:.1f} %" for _, p in pairs]
        assert shown[name][0][0] == prediction["label"]


def test_the_page_of_a_text_only_model(browser: Any, text_server: dict[str, Any],
                                       shot: Callable[[Any, str], Path]) -> None:
    url = text_server["url"]
    info = _api(url, "/v1/info")
    assert info["inputs"] == ["text"]
    assert [(d["name"], d["queries"]) for d in info["datasets"]] == [("phrases", ["text"])]
    assert [(h["name"], h["inputs"]) for h in info["heads"]] == [("mood", ["text"])]
    errors: list[str] = []
    page = watched_page(browser, errors, 500)
    _ready(page, url)

    # 1. only the query box: no drop zone, and an image dropped on the page is no query
    assert page.is_hidden("#drop") and page.is_hidden("#query-image")
    assert page.is_enabled("#query") and page.get_attribute("#query", "placeholder") == "Type a query"
    model = page.inner_text("#model").replace("\xa0", " ")  # the parts keep their words together
    assert "· text inputs ·" in model and "image" not in model
    assert page.inner_text("#dataset option") == "phrases (16 texts)"
    _drop(page, _picture("red", 1), "red.png", target="body")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__searches") == 0 and page.is_hidden("#error")
    shot(page, "text-only-1-ready")
    page.get_by_role("button", name="Search", exact=True).click()  # nothing typed: asked for a text only
    page.wait_for_selector("#error", state="visible")
    assert page.inner_text("#error") == "Type a query." and page.evaluate("window.__searches") == 0

    # 2. a text query: the k nearest texts with the API's scores, and the head's classes
    page.get_by_label("k", exact=True).fill(str(K))
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("a great meal")
    page.get_by_label("Search", exact=True).press("Enter")
    search_done(page, before)
    expected = _api(url, "/v1/search", {"dataset": "phrases", "queries": ["a great meal"], "k": K})["results"][0]
    assert len(expected) == K
    _assert_hits(page, expected)
    page.wait_for_function(f"document.querySelectorAll('#results .media .text').length === {K}", timeout=30_000)
    texts = page.eval_on_selector_all("#results .media .text", "items => items.map(i => i.textContent)")
    assert texts == [TEXTS[hit["row"]][0] for hit in expected]
    assert page.locator("#results .media img").count() == 0
    assert page.inner_text("#status").startswith(f"{K} nearest items to “a great meal” in phrases")
    _assert_heads(page, url, "a great meal", ["mood"])
    assert page.is_visible("#heads")
    shot(page, "text-only-2-query")

    # 3. another query, the Search button: the list and the classes follow it
    before = page.evaluate("window.__searches")
    page.get_by_label("Search", exact=True).fill("rain and cold all week")
    page.get_by_role("button", name="Search", exact=True).click()
    search_done(page, before)
    expected = _api(url, "/v1/search", {"dataset": "phrases", "queries": ["rain and cold all week"],
                                        "k": K})["results"][0]
    _assert_hits(page, expected)
    _assert_heads(page, url, "rain and cold all week", ["mood"])
    shot(page, "text-only-3-query")
    assert not errors, errors


def test_the_page_of_an_image_only_model(browser: Any, image_server: dict[str, Any],
                                         shot: Callable[[Any, str], Path]) -> None:
    url = image_server["url"]
    info = _api(url, "/v1/info")
    assert info["inputs"] == ["image"] and info["model"] == "timm:test_vit"  # no "@None": timm has no revisions
    assert [(d["name"], d["queries"]) for d in info["datasets"]] == [("discs", ["image"])]
    assert [(h["name"], h["inputs"]) for h in info["heads"]] == [("colour", ["image"])]
    errors: list[str] = []
    page = watched_page(browser, errors, 500)
    _ready(page, url)

    # 1. only the drop zone: the query box is disabled and says the dataset is searched by images
    assert page.is_visible("#drop") and page.is_hidden("#query-image")
    assert page.is_disabled("#query")
    assert page.get_attribute("#query", "placeholder") == "This dataset is searched by images: drop one below"
    model = page.inner_text("#model").replace("\xa0", " ")  # the parts keep their words together
    assert "· image inputs ·" in model and "text" not in model
    assert page.inner_text("#dataset option") == "discs (12 images)"
    shot(page, "image-only-1-ready")

    # 2. an image dropped on the drop zone: its k neighbours with thumbnails, the API's scores, the head's classes
    page.get_by_label("k", exact=True).fill(str(K))
    query = image_server["query"]
    image = {"image": base64.b64encode(query).decode()}
    before = page.evaluate("window.__searches")
    _drop(page, query, "red-query.png")
    search_done(page, before)
    assert page.evaluate("window.__searches") == before + 1  # one drop, one search
    expected = _api(url, "/v1/search", {"dataset": "discs", "queries": [image], "k": K})["results"][0]
    assert len(expected) == K
    _assert_hits(page, expected)
    page.wait_for_function(
        """n => { const imgs = [...document.querySelectorAll('#results li.hit .media img')];
                  return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0 && i.alt); }""",
        arg=K, timeout=30_000)
    alts = page.eval_on_selector_all("#results li.hit .media img", "items => items.map(i => i.alt)")
    assert alts == [f"Item {hit['row']}, labelled {hit['label']} ({Path(hit['origin']).name})" for hit in expected]
    assert page.get_attribute("#query-image", "alt") == "The query image: red-query.png"
    assert page.is_visible("#query-image")
    assert page.inner_text("#status").startswith(f"{K} nearest items to the image in discs")
    _assert_heads(page, url, image, ["colour"])
    shot(page, "image-only-2-drop")

    # 3. a larger k and the Search button: the same image searched again
    page.get_by_label("k", exact=True).fill("8")
    before = page.evaluate("window.__searches")
    page.get_by_role("button", name="Search", exact=True).click()
    search_done(page, before)
    expected = _api(url, "/v1/search", {"dataset": "discs", "queries": [image], "k": 8})["results"][0]
    _assert_hits(page, expected)
    _assert_heads(page, url, image, ["colour"])
    assert page.is_hidden("#error")
    shot(page, "image-only-3-k8")
    assert not errors, errors


def test_an_image_only_page_asks_for_an_image_not_a_text(browser: Any, image_server: dict[str, Any],
                                                         shot: Callable[[Any, str], Path]) -> None:
    """Search with no image yet: the query box is disabled, so the page should ask for an image only."""
    errors: list[str] = []
    page = watched_page(browser, errors, 500)
    _ready(page, image_server["url"])
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_selector("#error", state="visible")
    shot(page, "image-only-4-no-image")
    message = page.inner_text("#error")
    assert page.evaluate("window.__searches") == 0 and not errors, errors
    assert "image" in message and "Type" not in message, message
