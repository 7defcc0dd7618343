"""Bad input, with numbers: a generated corpus of 500+ malformed files next to 500+ good ones goes
through ``hubtune extract`` (images through DataLoader workers, text in-process) with 0 crashes,
0 hangs, bounded work per item (pixels decoded, characters tokenised: counted, not timed) and bounded
memory; one structured error per bad item, every good item stored once.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubtune.imageio import MAX_IMAGE_PIXELS
from hubtune.store import EmbeddingStore

PER_ITEM_CHARACTERS = 64 * 1024  # handed to the tokeniser for any one text, the 10 MB one included
EXTRA_MEMORY_LIMIT = 1 << 30  # peak RSS of the run above the forked process's starting RSS


def key_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _encode(image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims ``width x height`` pixels (the data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def image_corpus(root: Path) -> dict[str, dict[bytes, str]]:
    """``root/{good,bad}/*``; returns {"good": {key: kind}, "bad": {key: kind}} by distinct content."""
    from PIL import Image

    rng = np.random.default_rng(0)
    good: dict[str, bytes] = {}
    bad: dict[str, bytes] = {}
    for i in range(450):
        good[f"rgb{i}.png"] = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    good["gray8.png"] = _encode(Image.fromarray(gray))
    good["gray16.png"] = _encode(Image.fromarray(gray.astype(np.uint16) * 257))  # same picture in 16 bits
    good["one_by_one.png"] = _encode(Image.new("RGB", (1, 1), (200, 10, 10)))
    good["cmyk.jpg"] = _encode(Image.new("CMYK", (32, 32), (10, 200, 30, 5)), "JPEG")
    good["palette.png"] = _encode(Image.fromarray(gray).convert("P"))
    good["rgba.png"] = _encode(Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)))
    good["wide.png"] = _encode(Image.fromarray(rng.integers(0, 256, (8, 900, 3), dtype=np.uint8)))
    for i in range(100):
        png = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        bad[f"truncated{i}.png"] = png[: int(len(png) * rng.uniform(0.05, 0.9))]
    for i in range(60):
        jpeg = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
        bad[f"truncated{i}.jpg"] = jpeg[: len(jpeg) - int(rng.integers(50, 300))]
    bad["zero.png"] = b""
    for i, suffix in enumerate([".png", ".jpg", ".gif", ".webp", ".bmp", ".tiff"] * 25):
        bad[f"random{i}{suffix}"] = rng.bytes(int(rng.integers(1, 2000)))
    for i in range(5):
        bad[f"claims_1e9_pixels{i}.png"] = _png_header(40_000 + i, 25_000)
        side = 9_460 + i  # 89,491,600+ pixels: just over Pillow's warning limit
        assert MAX_IMAGE_PIXELS < side * side < 2 * MAX_IMAGE_PIXELS
        bad[f"over_limit{i}.png"] = _png_header(side, side)
    return _write(root, good, bad)


def text_corpus(root: Path) -> dict[str, dict[bytes, str]]:
    rng = np.random.default_rng(1)
    words = ["river", "stone", "quiet", "bright", "Zürich", "naïve", "東京", "emoji 🙂", "x"]
    good = {f"t{i}.txt": " ".join(rng.choice(words, int(rng.integers(1, 40)))).encode() + f" {i}".encode()
            for i in range(300)}
    picks = rng.integers(0, len(words), 1_400_000)
    long_text = " ".join(f"{words[j]}{i % 97}" for i, j in enumerate(picks))[: 10 * 1024 * 1024]
    good["ten_megabytes.txt"] = long_text.encode()
    good["its_first_10_kb.txt"] = long_text[: long_text.rfind(" ", 0, 10_000)].encode()  # the same after truncation
    good["one_char.txt"] = b"a"
    bad: dict[str, bytes] = {}
    for i in range(60):
        bad[f"latin1_{i}.txt"] = f"café crème brûlée {i}".encode("latin-1")
        bad[f"cp1252_{i}.txt"] = f"“quoted” – {i}".encode("cp1252")
        bad[f"utf16_{i}.txt"] = f"text in utf-16 {i}".encode("utf-16")
        bad[f"shift_jis_{i}.txt"] = f"東京タワー {i}".encode("shift_jis")
    for i in range(40):
        bad[f"binary{i}.txt"] = b"\xff\xfe\xfd" + rng.bytes(int(rng.integers(1, 500)))
    bad["empty.txt"] = b""
    return _write(root, good, bad)


def _write(root: Path, good: dict[str, bytes], bad: dict[str, bytes]) -> dict[str, dict[bytes, str]]:
    for kind, files in (("good", good), ("bad", bad)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / kind / name).write_bytes(data)
    return {kind: {key_of(data): name for name, data in files.items()} for kind, files in (("good", good), ("bad", bad))}


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _per_item_work(ref: str, folder: Path) -> dict:
    """Decode + preprocess each file alone (what a worker does per item), counting its work instead of
    timing it: the pixels Pillow allocates to decode it, the characters handed to the tokeniser."""
    from PIL import ImageFile

    from hubtune.api import load_backbone
    from hubtune.errors import InputError

    preprocessor = load_backbone(ref, device="cpu", precision="fp32").preprocessor
    work = {"pixels": 0, "characters": 0}
    prepare = ImageFile.ImageFile.load_prepare

    def counted_prepare(image: Any) -> None:  # where Pillow allocates the decoded image
        work["pixels"] += image.size[0] * image.size[1]
        prepare(image)

    ImageFile.ImageFile.load_prepare = counted_prepare  # this forked child only
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is not None:
        class CountedTokenizer:
            def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any:
                work["characters"] += sum(map(len, text)) if isinstance(text, list) else len(text)
                return tokenizer(text, *args, **kwargs)

            def __getattr__(self, name: str) -> Any:
                return getattr(tokenizer, name)

        preprocessor.tokenizer = CountedTokenizer()
    most = {"pixels": (0, ""), "characters": (0, ""), "seconds": (0.0, "")}
    for path in sorted(folder.rglob("*.*")):
        work.update(pixels=0, characters=0)
        started = time.perf_counter()  # reported in the figure, never asserted on
        try:
            preprocessor(path.read_bytes() if path.suffix != ".txt" else _text_or_bytes(path))
        except InputError:
            pass
        seconds = time.perf_counter() - started
        for name, value in (("pixels", work["pixels"]), ("characters", work["characters"]), ("seconds", seconds)):
            if value > most[name][0]:
                most[name] = (value, path.name)
    return most


def _text_or_bytes(path: Path) -> str | bytes:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _run_extract(fork: Any, ref: str, data: Path, cache: Path, workers: int, log: Path, timeout: float) -> dict:
    """``hubtune extract`` in a forked child under a deadline; its exit code, seconds and memory."""
    memory = log.with_suffix(".memory.json")
    started = time.monotonic()
    pid = fork.start(lambda: _cli(memory, "extract", ref, str(data), "--cache", str(cache), "--workers", str(workers),
                             "--batch-size", "32", "--no-progress", "--device", "cpu", "--precision", "fp32"),
                stderr_to=log)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError(f"extract hung for more than {timeout} s")
        time.sleep(0.02)
    return {"code": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - started,
            **json.loads(memory.read_text())}


def _cli(memory: Path, *args: str) -> None:
    """The CLI; then the growth of this process's peak RSS and its DataLoader workers' peak RSS."""
    from hubtune.cli import main

    begin = _rss()
    try:
        main(list(args))
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        memory.write_text(json.dumps({"extra_memory": max(0, peak - begin), "workers_peak": workers}))


def _check_store(cache: Path, corpus: dict[str, dict[bytes, str]]) -> tuple[int, int]:
    with EmbeddingStore(cache, readonly=True) as store:
        (fingerprint,) = store.fingerprints()
        errors = store.errors(fingerprint)
        good = list(corpus["good"])
        assert set(errors) == set(corpus["bad"]), {corpus["good"].get(k, "?") for k in set(errors) ^ set(corpus["bad"])}
        for record in errors.values():  # structured: a reason and where the item came from
            assert record["reason"] and os.path.isabs(record["origin"]) and "\n" not in record["reason"]
        assert store.has(fingerprint, good) == [True] * len(good)
        assert store.count(fingerprint) == len(good)  # every good item exactly once
        assert store.verify().ok
        return len(good), len(errors)


@pytest.mark.slow
def test_malformed_images_and_texts(fork, tiny_vit_repo: str, tiny_bert_repo: str, tmp_path: Path, figure) -> None:
    from PIL import Image

    images = image_corpus(tmp_path / "images")
    texts = text_corpus(tmp_path / "texts")
    good = len(images["good"]) + len(texts["good"])
    bad = len(images["bad"]) + len(texts["bad"])
    assert good >= 500 and bad >= 500
    max_good_pixels = 0  # the largest good image's size: no item, bombs included, may make Pillow decode more
    for path in (tmp_path / "images" / "good").iterdir():
        with Image.open(path) as image:
            max_good_pixels = max(max_good_pixels, image.size[0] * image.size[1])
    rows = []
    for ref, folder, corpus, workers in ((f"hf:{tiny_vit_repo}", tmp_path / "images", images, 2),
                                         (f"hf:{tiny_bert_repo}", tmp_path / "texts", texts, 0)):
        log = tmp_path / f"{folder.name}.log"
        most = fork.call(lambda: _per_item_work(ref, folder), timeout=300)
        assert most["pixels"][0] <= max_good_pixels, most  # no item decodes more than the largest good image
        assert most["characters"][0] <= PER_ITEM_CHARACTERS, most  # the 10 MB text is cut before tokenising
        assert most["pixels" if folder.name == "images" else "characters"][0] > 0, "counted nothing: vacuous"
        run = _run_extract(fork, ref, folder, tmp_path / f"cache-{folder.name}", workers, log, timeout=300)
        assert run["code"] == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
        assert run["extra_memory"] < EXTRA_MEMORY_LIMIT and run["workers_peak"] < 2 * EXTRA_MEMORY_LIMIT, run
        stored, failed = _check_store(tmp_path / f"cache-{folder.name}", corpus)
        rows.append(f"{folder.name}: {stored} stored, {failed} errors, most work for one item: "
                    f"{most['pixels'][0]:,} pixels decoded ({most['pixels'][1] or '-'}), {most['characters'][0]:,} "
                    f"characters tokenised ({most['characters'][1] or '-'}), slowest item {most['seconds'][0]:.2f} s "
                    f"({most['seconds'][1]}), run {run['seconds']:.1f} s, peak RSS +{run['extra_memory'] / 2**20:.0f} MiB "
                    f"(DataLoader workers' peak {run['workers_peak'] / 2**20:.0f} MiB)")
    with EmbeddingStore(tmp_path / "cache-images", readonly=True) as store:  # 16-bit decoded as its 8-bit twin
        (fingerprint,) = store.fingerprints()
        key = {name: key for key, name in images["good"].items()}
        eight, sixteen = store.get(fingerprint, [key["gray8.png"], key["gray16.png"]])
    np.testing.assert_array_equal(eight, sixteen)
    with EmbeddingStore(tmp_path / "cache-texts", readonly=True) as store:  # truncation: the 10 MB text = its head
        (fingerprint,) = store.fingerprints()
        key = {name: key for key, name in texts["good"].items()}
        whole, head = store.get(fingerprint, [key["ten_megabytes.txt"], key["its_first_10_kb.txt"]])
    np.testing.assert_array_equal(whole, head)
    figure("bad input", f"{good} good + {bad} malformed files: 0 crashes, 0 hangs; " + "; ".join(rows))
