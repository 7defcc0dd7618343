"""Shared test set-up: every cache in a private temporary folder, no network, tiny models; and the
fixtures test modules share (test modules never import one another).

The environment is set at import time, before any test imports huggingface_hub (which reads
``HF_HUB_OFFLINE`` once, at import).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="hubtune-tests-"))
os.environ["HF_HOME"] = str(_ROOT / "hf")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TORCH_HOME"] = str(_ROOT / "torch")
os.environ["HUBTUNE_HOME"] = str(_ROOT / "hubtune")
os.environ.pop("HUBTUNE_LOAD_PLUGINS", None)

TEST_OWNER = "hubtune-test"


@pytest.fixture(scope="session")
def test_root() -> Path:
    return _ROOT


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test starts from the installed plugins only (no leftovers from another test)."""
    from hubtune import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def tiny_vit_repo(test_root: Path) -> str:
    """A 2-layer ViT saved with ``save_pretrained`` and seeded into the Hub cache."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from hubtune.hfhub import seed_snapshot

    folder = test_root / "build" / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    repo = f"{TEST_OWNER}/tiny-vit"
    seed_snapshot(repo, folder)
    return repo


@pytest.fixture(scope="session")
def tiny_bert_repo(test_root: Path) -> str:
    """A 2-layer BERT (plain transformers repo, no sentence-transformers config) in the Hub cache."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from hubtune.hfhub import seed_snapshot
    from hubtune_hf.embedded import embedded_files

    folder = test_root / "build" / "tiny-bert"
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(embedded_files() / "vocab.txt"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    repo = f"{TEST_OWNER}/tiny-bert"
    seed_snapshot(repo, folder)
    return repo


@pytest.fixture(scope="session")
def rgb_images():
    """A few deterministic RGB images of different sizes, as PNG bytes."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for height, width in [(40, 40), (64, 48), (33, 97)]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


# -- figures ---------------------------------------------------------------------------------------------------
@pytest.fixture
def figure(capsys: pytest.CaptureFixture, record_property: Callable) -> Callable[[str, str], None]:
    """``figure(name, text)``: print a measured figure past pytest's capture and record it."""

    def emit(name: str, text: str) -> None:
        record_property(name, text)
        with capsys.disabled():
            print(f"\n[reliability] {name}: {text}", flush=True)

    return emit


# -- the CLI in a fresh process --------------------------------------------------------------------------------
def _run_hubtune(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "hubtune", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"hubtune {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def run_hubtune() -> Callable[..., subprocess.CompletedProcess]:
    """``run_hubtune(*args, env=None, check=True)``: ``python -m hubtune ARGS`` in a subprocess (the
    environment plus ``env``); raises with its stderr when it exits non-zero and ``check``."""
    return _run_hubtune


# -- forked children (the reliability harnesses) -----------------------------------------------------------------
# Spawning ``hubtune`` costs seconds of torch import each time; the harnesses instead fork the test process,
# which has already imported torch and hubtune, and run the work in the child. Children use one torch thread
# (as DataLoader workers do) and leave through ``os._exit`` so nothing of pytest runs twice.
def _child_setup(stderr_to: Path | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if stderr_to is not None:
        fd = os.open(stderr_to, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.close(fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # pytest's capture replaced the objects
        sys.stderr = open(2, "w", buffering=1, closefd=False)


def _start(work: Callable[[], Any], *, stderr_to: Path | None = None) -> int:
    """Fork a child that runs ``work()`` and exits (0 on success, 1 on an exception); return its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _child_setup(stderr_to)
            work()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, timeout: float) -> int | None:
    """Exit code of ``pid``, ``-signal`` if it was killed, or None (and SIGKILLed) past ``timeout``
    (a watchdog against hangs: no test asserts on how long a child took)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def _call(work: Callable[[], Any], *, timeout: float = 120.0) -> Any:
    """Run ``work()`` in a forked child and return its JSON-able result; raise if it failed or hung."""
    read_end, write_end = os.pipe()

    def child() -> None:
        os.close(read_end)
        payload = json.dumps(work()).encode()
        with os.fdopen(write_end, "wb") as stream:
            stream.write(payload)

    pid = _start(child)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read_end, "rb") as stream:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], 0.1)
            if ready:
                chunk = os.read(stream.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    code = _wait(pid, max(1.0, deadline - time.monotonic()))
    if code is None:
        raise AssertionError(f"forked child hung for more than {timeout} s")
    if code != 0:
        raise AssertionError(f"forked child failed with exit code {code} (its traceback is on stderr)")
    return json.loads(b"".join(chunks))


@pytest.fixture(scope="session")
def fork() -> SimpleNamespace:
    """The fork harness: ``fork.start(work, stderr_to=None) -> pid``, ``fork.wait(pid, timeout) -> exit
    code, -signal, or None`` (SIGKILLed past the timeout), ``fork.call(work, timeout=120) -> work()'s
    JSON-able result``."""
    return SimpleNamespace(start=_start, wait=_wait, call=_call)


# -- data --------------------------------------------------------------------------------------------------------
def _png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_image_folder(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i:03d}.png").write_bytes(_png(seed + 100 * c + i))
    return root


@pytest.fixture(scope="session")
def png() -> Callable[..., bytes]:
    """``png(seed, size=(48, 40))``: a deterministic random RGB PNG, as bytes."""
    return _png


@pytest.fixture(scope="session")
def make_image_folder() -> Callable[..., Path]:
    """``make_image_folder(root, per_class=6, seed=0)``: ``root/{cat,dog}/NNN.png``, 48x40 random PNGs."""
    return _make_image_folder


def _text_table(path: Path, n: int) -> Path:
    rows = [{"text": f"review number {i} says {'good' if i % 3 else 'bad'} things", "label": "pos" if i % 3 else "neg",
             "split": "val" if i % 5 == 0 else "train"} for i in range(n - 2)]
    rows += [dict(rows[1]), {"text": "", "label": "neg"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def text_table() -> Callable[[Path, int], Path]:
    """``text_table(path, n)``: a JSONL of ``n`` rows: distinct texts, one repeated text and one empty
    text (which fails)."""
    return _text_table


def _assert_same_store(merged: Path, plain: Path, dataset: str) -> None:
    import numpy as np

    from hubtune.store import EmbeddingStore

    with EmbeddingStore(merged, readonly=True) as got, EmbeddingStore(plain, readonly=True) as want:
        assert got.fingerprints() == want.fingerprints()
        (fingerprint,) = want.fingerprints()
        assert got.manifest(dataset) == want.manifest(dataset)
        assert got.errors(fingerprint) == want.errors(fingerprint)
        keys = [bytes.fromhex(k) for k in want.manifest(dataset)["keys"]
                if bytes.fromhex(k) not in want.errors(fingerprint)]
        np.testing.assert_allclose(got.get(fingerprint, keys), want.get(fingerprint, keys), rtol=2e-3, atol=2e-3)
        assert got.verify().ok


@pytest.fixture(scope="session")
def assert_same_store() -> Callable[[Path, Path, str], None]:
    """``assert_same_store(merged, plain, dataset)``: same fingerprint, manifest, error records, and
    vectors to float16 rounding; the merged store verifies."""
    return _assert_same_store


def _content_key(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _small_png(seed: int, fmt: str = "PNG") -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _malformed(i: int) -> tuple[str, bytes]:
    """Five kinds of broken image file, each one distinct (distinct content keys)."""
    import numpy as np

    rng = np.random.default_rng(10_000 + i)
    kind = i % 5
    if i == 0:
        return ".png", b""  # zero bytes (only one: every empty file has the same key)
    if kind == 0:
        png = _small_png(20_000 + i)
        return ".png", png[: len(png) // 2]  # truncated inside the pixel data
    if kind == 1:
        jpeg = _small_png(20_000 + i, "JPEG")
        return ".jpg", jpeg[: len(jpeg) - 200]  # cut inside the scan (the first half is shared tables)
    if kind == 2:
        return ".png", rng.bytes(int(rng.integers(16, 600)))  # random bytes, image extension
    if kind == 3:
        return ".jpg", b"\xff\xd8\xff\xe0" + rng.bytes(int(rng.integers(16, 600)))  # a JPEG magic, then noise
    return ".png", f"not an image {i}\n".encode() * 20  # text with an image extension


def _make_crash_dataset(root: Path, good: int = 1900, bad: int = 100) -> tuple[Path, set[bytes], set[bytes]]:
    good_keys, bad_keys = set(), set()
    for i in range(good):
        data = _small_png(i)
        path = root / "ab"[i % 2] / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        good_keys.add(_content_key(data))
    for i in range(bad):
        suffix, data = _malformed(i)
        (root / "ab"[i % 2] / f"bad{i:04d}{suffix}").write_bytes(data)
        bad_keys.add(_content_key(data))
    assert len(good_keys) == good and len(bad_keys) == bad
    return root, good_keys, bad_keys


@pytest.fixture(scope="session")
def make_crash_dataset() -> Callable[..., tuple[Path, set[bytes], set[bytes]]]:
    """``make_crash_dataset(root, good=1900, bad=100) -> (root, good keys, bad keys)``: ``root/{a,b}/*``,
    ``good`` distinct 32 px PNGs and ``bad`` malformed files (five kinds) spread over both classes; keys
    are the store's content keys (blake2b-128 of the bytes)."""
    return _make_crash_dataset
