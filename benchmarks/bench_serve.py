"""`hubtune serve` under a bounded loopback load, next to Ray Serve's `@serve.batch` and to offline `extract`.

The same model (the bundled MiniLM, `hf:sentence-transformers/all-MiniLM-L6-v2`, fp32, CPU), the same
request and response (`POST /v1/embed {"inputs": [...]}` -> `{"model", "fingerprint", "dim", "vectors"}`)
and the same inputs for every stack: `--requests` requests of 1-8 mixed-length sentences (seeded), sent by
`--concurrency` keep-alive connections (a minimal HTTP/1.1 client on asyncio streams and uvloop, answers
parsed with orjson, in a process of their own, so the client never shares the server's event loop), to
127.0.0.1 only; each load stops by itself when the requests are answered.

Stacks, alternating, each in a fresh process with a fresh store (every input is new to it: nothing is
answered from the cache):

- `hubtune`: `hubtune serve` as built (FastAPI + uvicorn + the asyncio micro-batcher, `--max-batch-size`
  inputs (default 128, the service's default), `--max-wait-ms 5`), started with the CLI;
- `hubtune-nobatch`: the same with `--max-batch-size 1` (what batching buys);
- `ray`: Ray Serve 2.x, one replica of 2 CPUs (so 2 torch threads), `@serve.batch(max_batch_size=the same inputs, batch_wait_timeout_s=0.005)`
  over hubtune's own `Service.run` (the batch call `hubtune serve` makes, store included), the request
  checked by the same functions, behind Ray's HTTP proxy on 127.0.0.1 (`ray.init(num_cpus=2)`);
- `hubtune-httpx` (only when named): `hubtune` again, loaded by an httpx client instead: what a heavy load
  generator on the same two cores costs the measurement (this benchmark's client until 2026-12-01);
- `ray-replicas` (only with `--stacks ...,ray-replicas`): `hubtune serve --engine ray --replicas 2`'s
  deployment (`hubtune.serve.ray_engine`: the same FastAPI app, batcher included, in each replica);
- `extract`: offline `hubtune.extract.extract` of the same inputs (all of them, in request order) into a
  fresh store, model preloaded and warmed, as bench_text_extract.py times it; run right before each
  served load (the other tenants' load drifts within minutes), and each load's ratio is to that extract.

Each served load starts after a warm-up (64 requests of other sentences). Reported per stack: p50/p99
latency, requests/s, items/s, errors (non-200 answers, answers with a wrong number of vectors, client
errors); served items/s over the extract items/s measured just before (target with batching: >= 0.70,
0 errors); and, less sensitive to the other tenants, items per CPU-second of the server's whole process
tree (Ray's proxy, controller and raylet included) over extract's items per CPU-second, and the client's
CPU seconds. The load average is recorded before each measurement (the machine is shared).

Usage: python benchmarks/bench_serve.py [--requests 2000] [--concurrency 32] [--repeats 3]
       [--stacks hubtune,ray,hubtune-nobatch] [--tag NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, fact_row, machine, save, sentences  # noqa: E402

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
OPTIONS = ["--precision", "fp32", "--device", "cpu"]
HERE = Path(__file__).resolve()
RAY_ENV = {"RAY_DEDUP_LOGS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1",
           "RAY_SERVE_LOG_TO_STDERR": "0"}
STACKS = ("hubtune", "ray", "hubtune-nobatch", "ray-replicas", "hubtune-httpx")


# -- CPU time (the machine is shared: CPU seconds per item do not depend on the others' load as much) ----
def cpu_self() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (and of the children they reaped), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo.extend(child for child, parent in parents.items() if parent == current and child not in tree)
    return sum(times.get(p, 0.0) for p in tree)


# -- the load --------------------------------------------------------------------------------------------
def requests(count: int, seed: int) -> list[list[str]]:
    """``count`` requests of 1-8 distinct sentences each (seeded)."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 8) for _ in range(count)]
    texts = sentences(sum(sizes), seed=seed)
    out, start = [], 0
    for size in sizes:
        out.append(texts[start: start + size])
        start += size
    return out


async def answer_of(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: ``(status, body, the server keeps the connection)``; a
    ``Content-Length`` or a chunked body (trailers read and dropped). A stream out of step (bytes
    after the last body) raises: the request counts as an error and the connection is dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    if not head[0].startswith("HTTP/1."):  # bytes left over from the last answer: the stream is out of step
        raise ValueError(f"not an HTTP/1.x status line: {head[0][:60]!r}")
    status = int(head[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size + 2))
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer lines, then the empty line
            pass
        body = b"".join(part[:-2] for part in parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


class Connection:
    """One keep-alive HTTP/1.1 connection: ``await post(body)`` -> ``(status, answer bytes)``; reopened
    after the server closes it or a request fails."""

    def __init__(self, url: str):
        self.host, self.port = url.removeprefix("http://").rsplit(":", 1)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        head = (f"POST /v1/embed HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, int(self.port))
            reader, writer = self.streams
            writer.write(head + body)
            status, answer, keep = await asyncio.wait_for(answer_of(reader), 120.0)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, answer

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(url: str, payloads: list[list[str]], concurrency: int, client: str = "raw") -> dict[str, Any]:
    """Send every payload once from ``concurrency`` keep-alive connections; latencies, wall time, errors.

    ``client="raw"`` (the default): a minimal HTTP/1.1 client on asyncio streams, which is what a load
    generator such as wrk is. The load shares the server's two cores, and httpx's client
    (``client="httpx"``, the ``hubtune-httpx`` stack) takes 4-5 CPU-seconds per 1,000 requests of them,
    about a tenth of the machine during a load: it measured the client as much as the server. Answers
    are parsed with orjson and their vectors counted."""
    import contextlib

    import orjson

    latencies: list[float] = []
    errors: list[str] = []
    answered = [0]  # inputs of the requests answered right: what items/s counts
    todo = iter(range(len(payloads)))
    opened = None
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        opened = httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0)
    async with opened or contextlib.nullcontext() as shared:
        async def through_httpx(body: bytes) -> tuple[int, bytes]:
            answer = await shared.post("/v1/embed", content=body, headers={"Content-Type": "application/json"})
            return answer.status_code, answer.content

        async def worker() -> None:
            connection = Connection(url)
            post = through_httpx if client == "httpx" else connection.post
            for index in todo:
                inputs = payloads[index]
                started = time.perf_counter()
                try:
                    status, answer = await post(orjson.dumps({"inputs": inputs}))
                    if status != 200:
                        errors.append(f"{status}: {answer[:200]!r}")
                    elif len(vectors := orjson.loads(answer)["vectors"]) != len(inputs):
                        errors.append(f"{len(vectors)} vectors for {len(inputs)} inputs")
                    else:
                        answered[0] += len(inputs)
                except Exception as error:  # noqa: BLE001 (counted, and the load goes on)
                    errors.append(f"{type(error).__name__}: {error}")
                latencies.append(time.perf_counter() - started)
            connection.close()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "latencies_s": latencies, "errors": errors, "answered_items": answered[0]}


def run_async(main: Any) -> Any:
    """``asyncio.run``, on uvloop when it is installed (the load generator's own event loop is cheaper)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def client_main(url: str, payload_file: str, concurrency: int, out: str, client: str, server_pid: int) -> None:
    """The warm-up, then the measured load; the client's and the server's CPU seconds of the load only."""
    data = json.loads(Path(payload_file).read_text())
    run_async(load(url, data["warmup"], concurrency, client))
    before, server_before = cpu_self(), tree_cpu(server_pid)
    result = run_async(load(url, data["requests"], concurrency, client))
    result["cpu_s"] = cpu_self() - before
    result["server_cpu_s"] = tree_cpu(server_pid) - server_before
    Path(out).write_text(json.dumps(result))


# -- the Ray Serve peer --------------------------------------------------------------------------------
def ray_main(port: int, cache: str, max_batch: int, wait_ms: float, ready_file: str) -> None:
    """One Ray Serve replica: ``@serve.batch`` over hubtune's Service.run, same checks and answer."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from hubtune.backbone import LoadOptions
    from hubtune.errors import HubtuneError
    from hubtune.serve.config import ServeConfig

    config = ServeConfig(ref=MODEL, cache=Path(cache), options=LoadOptions(precision="fp32", device="cpu"),
                         max_batch_size=max_batch, max_wait_ms=wait_ms)

    # both CPUs: Ray sets a replica's OMP/torch threads to its num_cpus (1 would halve its forward)
    @serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 2})
    class Embedder:
        def __init__(self) -> None:
            from hubtune.serve.service import Service

            self.service = Service(config)
            self.service.load()
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubtune-model")

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_ms / 1000,
                     batch_size_fn=lambda jobs: sum(len(job) for job in jobs))
        async def embed(self, jobs: list[list[str]]) -> list[Any]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self.service.run, ("embed", "text"), jobs)

        async def __call__(self, request: Request) -> JSONResponse:
            from hubtune.serve import answers, schemas
            from hubtune.serve.inputs import check_values, parse_json
            from hubtune.serve.statuses import error_body, status_of

            if request.url.path.rstrip("/").endswith("healthz"):
                return JSONResponse({"status": "ok"})
            try:
                values = check_values(parse_json(await request.body(), schemas.EmbedRequest).inputs, "inputs", config)
                self.service.embed_kind(values)
                result = await self.embed(values)
                if isinstance(result, BaseException):
                    raise result
                return answers.response(result)
            except HubtuneError as error:
                return JSONResponse(error_body(error, status_of(error)), status_of(error))

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 << 20)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Embedder.bind(), name="bench", route_prefix="/")
    ready_until_sigterm(ready_file)


def replicas_main(port: int, cache: str, max_batch: int, wait_ms: float, ready_file: str, replicas: int) -> None:
    """``hubtune serve --engine ray --replicas N``'s deployment, started through its module."""
    import ray

    from hubtune.backbone import LoadOptions
    from hubtune.serve.config import ServeConfig
    from hubtune.serve.ray_engine import start

    config = ServeConfig(ref=MODEL, cache=Path(cache), options=LoadOptions(precision="fp32", device="cpu"),
                         max_batch_size=max_batch, max_wait_ms=wait_ms, port=port)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 << 20)
    start(config, replicas=replicas, cpus_per_replica=2 / replicas)
    ready_until_sigterm(ready_file)


def ready_until_sigterm(ready_file: str) -> None:
    """Say ready (the file the load waits for), serve until SIGTERM, then stop Serve and Ray."""
    import ray
    from ray import serve

    Path(ready_file).write_text("ready")
    stop = asyncio.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()


# -- offline extract ---------------------------------------------------------------------------------------
def extract_main(payload_file: str, work: str, out: str) -> None:
    import hubtune
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore

    data = json.loads(Path(payload_file).read_text())
    texts = [text for request in data["requests"] for text in request]
    table = Path(work) / "inputs.jsonl"
    table.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    backbone = hubtune.load_backbone(MODEL, precision="fp32", device="cpu")
    backbone.embed([text for request in data["warmup"] for text in request][:64])
    before = cpu_self()
    with EmbeddingStore(Path(work) / "store") as store:
        summary = extract(MODEL, table, store, backbone=backbone, options=LoadOptions(precision="fp32"),
                          progress=False)
    Path(out).write_text(json.dumps({"items": len(texts), "seconds": summary.seconds, "cpu_s": cpu_self() - before}))


# -- the orchestrator --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                if httpx.post(url + "/v1/embed", json={"inputs": ["warm"]}, timeout=30).status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout:g} s")


def stop(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def served(stack: str, payload_file: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Start ``stack``'s server, run the load from its own process, stop the server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cache = work / f"cache-{stack}-{time.monotonic_ns()}"  # a fresh store each time: nothing answered from the cache
    env = {**os.environ, **RAY_ENV, "HF_HUB_OFFLINE": "1"}
    log = open(work / f"{stack}.log", "ab")
    if stack.startswith("hubtune"):
        batch = 1 if stack == "hubtune-nobatch" else args.max_batch_size
        command = [sys.executable, "-m", "hubtune", "serve", MODEL, "--cache", str(cache), "--host", "127.0.0.1",
                   "--port", str(port), "--max-batch-size", str(batch), "--max-wait-ms", str(args.max_wait_ms),
                   "--max-queue", "1024", *OPTIONS]
        sig = signal.SIGINT
    else:
        role = "ray-server" if stack == "ray" else "ray-replicas"
        command = [sys.executable, str(HERE), "--role", role, "--port", str(port), "--cache", str(cache),
                   "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
                   "--ready-file", str(work / f"{stack}.ready")]
        sig = signal.SIGTERM
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        wait_ready(url, server)
        out = work / f"{stack}-client.json"
        load_before = os.getloadavg()[0]
        subprocess.run([sys.executable, str(HERE), "--role", "client", "--url", url, "--payloads", str(payload_file),
                        "--concurrency", str(args.concurrency), "--out", str(out),
                        "--client", "httpx" if stack == "hubtune-httpx" else "raw", "--server-pid", str(server.pid)],
                       check=True, env=env)
        result = json.loads(out.read_text())
        server_cpu = result["server_cpu_s"]
    finally:
        stop(server, sig)
        log.close()
    items = result["answered_items"]  # a failed request's inputs are not served items
    lat = sorted(result["latencies_s"])
    return {"stack": stack, "requests": len(lat), "items": items, "wall_s": result["wall_s"],
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "requests_per_s": len(lat) / result["wall_s"], "items_per_s": items / result["wall_s"],
            "errors": len(result["errors"]), "error_samples": result["errors"][:5], "load_before": load_before,
            "server_cpu_s": server_cpu, "client_cpu_s": result["cpu_s"], "items_per_server_cpu_s": items / server_cpu}


def offline(payload_file: Path, work: Path) -> dict[str, Any]:
    folder = work / f"extract-{time.monotonic_ns()}"
    folder.mkdir()
    out = folder / "result.json"
    load_before = os.getloadavg()[0]
    subprocess.run([sys.executable, str(HERE), "--role", "extract", "--payloads", str(payload_file),
                    "--work", str(folder), "--out", str(out)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    result = json.loads(out.read_text())
    return {"stack": "extract", "items": result["items"], "seconds": result["seconds"],
            "items_per_s": result["items"] / result["seconds"], "load_before": load_before,
            "cpu_s": result["cpu_s"], "items_per_cpu_s": result["items"] / result["cpu_s"]}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# bench_serve: {result['requests']} requests of 1-8 texts, {result['concurrency']} clients, "
             f"{MODEL} fp32 CPU", "", f"Machine: {json.dumps(machine())}; load averages before each "
             "measurement are in the JSON.", "",
             "| stack | p50 ms | p99 ms | req/s | items/s | errors | items/s / extract's |", "|---|---|---|---|---|---|---|"]
    for stack, rows in result["stacks"].items():
        med = statistics.median
        ratios = result["ratios"].get(stack, [])
        lines.append(f"| {stack} | {med(r['p50_ms'] for r in rows):.0f} | {med(r['p99_ms'] for r in rows):.0f} | "
                     f"{med(r['requests_per_s'] for r in rows):.1f} | {med(r['items_per_s'] for r in rows):.1f} | "
                     f"{sum(r['errors'] for r in rows)} | {med(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}, "
                     f"n={len(ratios)}) |")
    extract_rates = [r["items_per_s"] for r in result["extract"]]
    lines.append(f"| offline extract | | | | {statistics.median(extract_rates):.1f} | | 1.00 |")
    lines += ["", "Medians over the repeats; the ratio is per repeat (served items/s over that repeat's extract "
              "items/s), median (min-max). Target with batching: >= 0.70 and 0 errors.", ""]
    lines += ["| measurement | result | target |", "|---|---|---|"]
    lines += [f"| {row['measurement']} | {row['result']} | {row['target']} |" for row in result["summary"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stacks", default="hubtune,ray,hubtune-nobatch")
    parser.add_argument("--max-batch-size", type=int, default=128)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the result files' name")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    for name in ("--url", "--payloads", "--out", "--cache", "--ready-file", "--work", "--client"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.role == "client":
        return client_main(args.url, args.payloads, args.concurrency, args.out, args.client, args.server_pid)
    if args.role == "ray-server":
        return ray_main(args.port, args.cache, args.max_batch_size, args.max_wait_ms, args.ready_file)
    if args.role == "ray-replicas":
        return replicas_main(args.port, args.cache, args.max_batch_size, args.max_wait_ms, args.ready_file, 2)
    if args.role == "extract":
        return extract_main(args.payloads, args.work, args.out)

    stacks = [s for s in args.stacks.split(",") if s]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks {sorted(unknown)}; known: {', '.join(STACKS)}")
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-serve-"))
    payload_file = work / "payloads.json"
    payload_file.write_text(json.dumps({"requests": requests(args.requests, args.seed),
                                        "warmup": requests(64, args.seed + 1)}))
    runs: dict[str, list[dict[str, Any]]] = {stack: [] for stack in stacks}
    extracts: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {stack: [] for stack in stacks}
    for repeat in range(args.repeats):
        order = stacks[repeat % len(stacks):] + stacks[:repeat % len(stacks)]  # alternate who goes first
        for stack in order:
            extracts.append(offline(payload_file, work))  # next to each load: the others' load drifts in minutes
            print(f"repeat {repeat}: extract {extracts[-1]['items_per_s']:.1f} items/s, "
                  f"{extracts[-1]['items_per_cpu_s']:.1f} items/CPU-s (load {extracts[-1]['load_before']:.2f})", flush=True)
            row = served(stack, payload_file, work, args)
            row["extract_items_per_s"] = extracts[-1]["items_per_s"]
            row["cpu_ratio"] = row["items_per_server_cpu_s"] / extracts[-1]["items_per_cpu_s"]
            runs[stack].append(row)
            ratios[stack].append(row["items_per_s"] / extracts[-1]["items_per_s"])
            print(f"repeat {repeat}: {stack}: p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, "
                  f"{row['requests_per_s']:.1f} req/s, {row['items_per_s']:.1f} items/s, {row['errors']} errors, "
                  f"{ratios[stack][-1]:.3f}x extract; server {row['items_per_server_cpu_s']:.1f} items/CPU-s "
                  f"({row['cpu_ratio']:.2f}x extract's), client {row['client_cpu_s']:.1f} CPU-s "
                  f"(load {row['load_before']:.2f})", flush=True)
    med = statistics.median
    summary = [fact_row("offline extract items/s (same inputs, fp32)",
                        f"{med(r['items_per_s'] for r in extracts):.1f} (n={len(extracts)})", "")]
    for stack in stacks:
        rs = ratios[stack]
        target = ">= 0.70, 0 errors" if stack in ("hubtune", "ray-replicas") else ""
        below = f"; {sum(r < 0.70 for r in rs)} of {len(rs)} repeats below 0.70" if target else ""
        summary.append(fact_row(f"{stack}: served items/s / extract items/s",
                                f"{med(rs):.3f} (per repeat {min(rs):.3f}-{max(rs):.3f}, n={len(rs)}); "
                                f"{sum(r['errors'] for r in runs[stack])} errors{below}", target))
        cpu = [r["cpu_ratio"] for r in runs[stack]]
        summary.append(fact_row(f"{stack}: items per server CPU-second / extract's items per CPU-second",
                                f"{med(cpu):.2f} (per repeat {min(cpu):.2f}-{max(cpu):.2f}, n={len(cpu)})", ""))
    if "hubtune" in runs and "ray" in runs:
        pairs = [a["items_per_s"] / b["items_per_s"] for a, b in zip(runs["hubtune"], runs["ray"])]
        summary.append(fact_row("hubtune serve items/s / Ray Serve @serve.batch items/s",
                                f"{med(pairs):.2f}x (per repeat {min(pairs):.2f}-{max(pairs):.2f}, n={len(pairs)})", ""))
    if "hubtune" in runs and "hubtune-nobatch" in runs:
        pairs = [a["items_per_s"] / b["items_per_s"] for a, b in zip(runs["hubtune"], runs["hubtune-nobatch"])]
        summary.append(fact_row(f"batching: max batch {args.max_batch_size} / max batch 1, items/s",
                                f"{med(pairs):.2f}x (per repeat {min(pairs):.2f}-{max(pairs):.2f}, n={len(pairs)})", ""))
    result = {"model": MODEL, "requests": args.requests, "concurrency": args.concurrency,
              "max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms, "seed": args.seed,
              "stacks": runs, "extract": extracts, "ratios": ratios, "summary": summary}
    for row in summary:
        print(f"{row['measurement']}: {row['result']}  (target {row['target'] or '-'})")
    shutil.rmtree(work, ignore_errors=True)  # stores and logs of every load (kept when a load fails)
    path = save("serve" + (f"-{args.tag}" if args.tag else ""), result)
    path.with_suffix(".md").write_text(markdown(result))
    print(f"saved {path} and {path.with_suffix('.md').relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
