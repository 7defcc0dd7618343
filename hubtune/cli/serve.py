"""CLI command ``serve``: the HTTP service (:mod:`hubtune.serve`) in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, model_options, resolve_cache


def _serve_extra() -> None:
    """FastAPI and uvicorn are the ``serve`` extra: say how to install them, not a traceback."""
    from importlib.util import find_spec

    from hubtune.errors import ServeError

    missing = [name for name in ("fastapi", "uvicorn", "multipart", "orjson") if find_spec(name) is None]
    if missing:
        raise ServeError(f"hubtune serve needs {', '.join('python-multipart' if m == 'multipart' else m for m in missing)}: "
                         "pip install 'hubtune[serve]'")


@click.command()
@click.argument("ref")
@cache_option
@click.option("--dataset", "datasets", multiple=True, metavar="NAME",
              help="A dataset of the store to search (repeatable); its index is built when missing.")
@click.option("--head", "heads", multiple=True, metavar="[NAME=]FOLDER",
              help="A head to serve at /v1/predict (repeatable; named by its folder unless NAME= is given). "
              "It must read this model's vectors (same fingerprint), or the service refuses to start.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the service (set a token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Inputs per model call: concurrent requests are coalesced up to this many (one request "
              "is never split: --max-inputs bounds it).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a batch waits for more requests before the model runs.")
@click.option("--streams", type=click.IntRange(min=1), default=None,
              help="Forwards of a batch run at once, each on its share of the torch threads, as extract's "
              "--streams (default: 2 on a CPU with 2+ threads, where two one-thread forwards beat one "
              "two-thread forward; 1 on CUDA).")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests waiting for the model; past it the service answers 503 with Retry-After.")
@click.option("--max-inputs", type=click.IntRange(min=1), default=256, show_default=True,
              help="Inputs (or queries) per request; past it: 413.")
@click.option("--max-text-chars", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Characters per text input; past it: 413.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=32.0, show_default=True,
              help="Request body size (JSON or multipart); past it: 413.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds a request may wait for its answer; past it: 504.")
@click.option("--token-env", metavar="VAR", default=None,
              help="Require 'Authorization: Bearer <token>' on /v1 routes, the token read from environment "
              "variable VAR (default: HUBTUNE_SERVE_TOKEN when set).")
@click.option("--json-logs", is_flag=True, help="Startup and access lines as JSON, one object per line.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process. ray: --replicas copies of the same app as Ray Serve replicas, each "
              "loading the model and batching on its own, behind Ray's HTTP proxy on --host/--port (a local "
              "Ray, or the cluster RAY_ADDRESS names; --cache must be a path every node sees).")
@click.option("--replicas", type=click.IntRange(min=1), default=2, show_default=True,
              help="Replicas with --engine ray.")
@model_options
def serve(ref: str, cache_dir: Path | None, datasets: tuple[str, ...], heads: tuple[str, ...], host: str,
          port: int, max_batch_size: int, max_wait_ms: float, streams: int | None, max_queue: int, max_inputs: int,
          max_text_chars: int, max_body_mb: float, request_timeout: float, token_env: str | None,
          json_logs: bool, engine: str, replicas: int, options: Any) -> None:
    """Serve REF's embeddings, the nearest items of datasets and heads' predictions over HTTP.

    One backbone per process, loaded once; concurrent requests are batched. Results equal
    `export`, `search --json` and `predict --json` for the same inputs. Routes: GET /healthz,
    GET /readyz, GET /v1/info, POST /v1/embed, /v1/search, /v1/predict, GET /v1/datasets/NAME/items/ROW, the
    API schema at /openapi.json and a search page at /.

    \b
    Example:
      hubtune extract sentence-transformers/all-MiniLM-L6-v2 reviews.jsonl --cache c
      hubtune train --cache c --model sentence-transformers/all-MiniLM-L6-v2 \\
          --dataset reviews --head linear --out sentiment
      HUBTUNE_SERVE_TOKEN=s3cret hubtune serve sentence-transformers/all-MiniLM-L6-v2 \\
          --cache c --dataset reviews --head sentiment
      curl -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \\
          -d '{"dataset": "reviews", "queries": ["great food"], "k": 3}' \\
          http://127.0.0.1:8000/v1/search

    Images go as {"image": "<base64>"} in JSON, or as files of a multipart form
    (curl -F inputs=@cat.jpg .../v1/embed).
    """
    from hubtune.constants import serve_token
    from hubtune.errors import ServeError
    from hubtune.serve.config import ServeConfig

    _serve_extra()
    token = serve_token(token_env)
    if token_env and token is None:
        raise ServeError(f"--token-env {token_env}: the environment variable {token_env} is not set (or empty)")
    config = ServeConfig(ref=ref, cache=resolve_cache(cache_dir), datasets=list(datasets), heads=list(heads),
                         options=options, host=host, port=port, max_batch_size=max_batch_size,
                         max_wait_ms=max_wait_ms, streams=streams, max_queue=max_queue, max_inputs=max_inputs,
                         max_text_chars=max_text_chars, max_body_bytes=int(max_body_mb * (1 << 20)),
                         request_timeout=request_timeout, token=token, json_logs=json_logs)
    config.head_paths()  # two heads with one name: refused before the model loads
    if not config.loopback and token is None:
        click.echo(f"warning: listening on {host} without a token: anyone who can reach it can use it "
                   "(set HUBTUNE_SERVE_TOKEN or --token-env VAR)", err=True)
    if engine == "ray":
        from hubtune.serve.ray_engine import serve_on_ray

        return serve_on_ray(config, replicas)
    from hubtune.serve.runner import serve as run

    run(config)
