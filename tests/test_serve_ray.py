"""``hubtune serve --engine ray``: the same app as 2 Ray Serve replicas on a local Ray (2 CPUs, 127.0.0.1)
answers /healthz, /readyz and /v1/embed as the local engine does, bad inputs with the same 4xx body, and
Ray shuts down cleanly.

The two engines fill separate stores, so each computes its vectors (stored as float16, as ``export``
writes them); they agree to float16 rounding (the replicas run one torch thread each, the local engine
two, so sums may round in another order).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow
MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
RAY_ENV = {"RAY_DEDUP_LOGS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}
TEXTS = ["a wonderful evening", "the food was awful", "trains leave every hour from the north platform", "ok"]


def config(cache: Path) -> Any:
    from hubtune.backbone import LoadOptions
    from hubtune.serve.config import ServeConfig

    return ServeConfig(ref=MODEL, cache=cache, options=LoadOptions(precision="fp32", device="cpu"), port=0)


def test_two_ray_replicas_answer_as_the_local_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubtune.serve import ray_engine
    from hubtune.serve.runner import Running

    with Running(config(tmp_path / "local")) as local:
        expected = httpx.post(local.url + "/v1/embed", json={"inputs": TEXTS}, timeout=60)
        refused = httpx.post(local.url + "/v1/embed", json={"inputs": [1]}, timeout=60)
    assert expected.status_code == 200 and 400 <= refused.status_code < 500

    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 << 20,
             _node_ip_address="127.0.0.1")
    try:
        url = ray_engine.start(config(tmp_path / "ray"), replicas=2, cpus_per_replica=1)
        assert url.startswith("http://127.0.0.1:")
        assert ray_engine.replicas_running() == 2
        assert httpx.get(url + "/healthz", timeout=30).json() == {"status": "ok"}
        ready = httpx.get(url + "/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["ready"] is True

        with ThreadPoolExecutor(6) as pool:  # concurrent requests: spread over both replicas, each batching
            answers = list(pool.map(lambda _: httpx.post(url + "/v1/embed", json={"inputs": TEXTS}, timeout=120),
                                    range(6)))
        want = expected.json()
        for answer in answers:
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert {k: got[k] for k in ("model", "fingerprint", "dim")} == {k: want[k] for k in ("model", "fingerprint", "dim")}
            np.testing.assert_allclose(np.array(got["vectors"]), np.array(want["vectors"]), atol=2e-3)

        bad = httpx.post(url + "/v1/embed", json={"inputs": [1]}, timeout=30)
        assert bad.status_code == refused.status_code and bad.json() == refused.json()
    finally:
        ray_engine.stop()
        ray.shutdown()
    assert not ray.is_initialized()


def test_serve_command_engine_ray_hands_the_config_to_ray_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hubtune serve --engine ray --replicas 3`` builds the same ServeConfig and calls serve_on_ray with it
    (no Ray started here: the call is recorded)."""
    from click.testing import CliRunner

    from hubtune.cli.app import cli
    from hubtune.serve import ray_engine

    calls: list[tuple[Any, int]] = []
    monkeypatch.setattr(ray_engine, "serve_on_ray", lambda config, replicas: calls.append((config, replicas)))
    result = CliRunner().invoke(cli, ["serve", MODEL, "--cache", str(tmp_path), "--engine", "ray", "--replicas", "3",
                                      "--port", "0", "--max-batch-size", "16", "--streams", "1", "--precision", "fp32", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config, replicas), = calls
    assert replicas == 3 and config.ref == MODEL and config.max_batch_size == 16 and config.host == "127.0.0.1"
    assert config.streams == 1


def test_the_ray_engine_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """``hubtune serve --engine ray`` stopped by SIGTERM as soon as it answers (Serve may still be
    finishing its start): it stops the replicas and Ray and exits 0. It used to end on SIGABRT, Ray's own
    SIGTERM handler (set by ray.init) having armed a 3-second abort that a Serve shutdown outlasts."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, **RAY_ENV, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hubtune", "serve", MODEL, "--cache", str(tmp_path / "c"), "--engine", "ray",
               "--replicas", "1", "--port", str(port), "--precision", "fp32", "--device", "cpu"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()[0][-3000:]
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/embed", json={"inputs": ["hello"]}, timeout=60)
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert "hubtune serve: stopped" in output
