"""The load generator of benchmarks/bench_serve.py counts what it is sent, not what it hopes for.

Its numbers back a target (served items/s against extract's, and 0 errors), so its HTTP/1.1 client is
checked here against a canned server: Content-Length and chunked answers (with a trailer), a server
that closes the connection after each answer, an error status, an answer with the wrong number of
vectors, a stray byte after an answer, and a connection that dies mid-answer. The httpx client it can
be switched to counts the same way, and both send each payload once, as the same bytes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("bench_serve")
    finally:
        sys.path.remove(str(BENCHMARKS))


def canned(inputs: list[str], mode: str) -> bytes:
    """The server's answer to one request in ``mode``."""
    vectors = [[0.5] * 3 for _ in inputs]
    if mode == "short":  # one vector missing
        vectors = vectors[1:]
    body = json.dumps({"vectors": vectors}).encode()
    if mode == "busy":
        body = b'{"error": "Overloaded"}'
        return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    if mode == "chunked":
        middle = len(body) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:middle], body[middle:]))
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\nx-trailer: 1\r\n\r\n"
    close = b"connection: close\r\n" if mode == "close" else b""
    stray = b"x" if mode == "stray" else b""  # one byte more than Content-Length says
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s%s" % (len(body), close, body, stray)


async def serve_canned(mode: str, load: Any, payloads: list[list[str]], client: str,
                       received: list[bytes] | None = None) -> tuple[dict[str, Any], int]:
    """Run ``load`` against a server answering every request in ``mode``; (result, connections opened).
    The request bodies the server read are appended to ``received``."""
    opened = 0
    received = received if received is not None else []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened
        opened += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                received.append(body)
                inputs = json.loads(body)["inputs"]
                if mode == "dies":  # half an answer, then the connection is gone
                    writer.write(canned(inputs, "plain")[:40])
                    await writer.drain()
                    break
                writer.write(canned(inputs, mode))
                await writer.drain()
                if mode == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await load(f"http://127.0.0.1:{port}", payloads, 3, client)
    return result, opened


PAYLOADS = [["a"], ["b", "c"], ["d", "e", "f"], ["g"], ["h", "i"], ["j"], ["k", "l"]]


@pytest.mark.parametrize("client", ["raw", "httpx"])
@pytest.mark.parametrize("mode", ["plain", "chunked", "close"])
def test_every_answer_is_read_and_counted(bench: Any, client: str, mode: str) -> None:
    received: list[bytes] = []
    result, opened = asyncio.run(serve_canned(mode, bench.load, PAYLOADS, client, received))
    assert result["errors"] == []
    assert len(result["latencies_s"]) == len(PAYLOADS) and result["wall_s"] > 0
    assert result["answered_items"] == sum(len(inputs) for inputs in PAYLOADS)
    assert sorted(received) == sorted(json.dumps({"inputs": inputs}, separators=(",", ":")).encode()
                                      for inputs in PAYLOADS)  # each payload once, the same bytes from both
    if client == "raw":  # keep-alive: one connection per client, unless the server closes each
        assert opened == (len(PAYLOADS) if mode == "close" else 3)


@pytest.mark.parametrize("client", ["raw", "httpx"])
@pytest.mark.parametrize(("mode", "says"), [("busy", "503"), ("short", "vectors for"), ("dies", "")])
def test_errors_are_counted_one_per_request_and_the_load_goes_on(bench: Any, client: str, mode: str, says: str) -> None:
    result, _ = asyncio.run(serve_canned(mode, bench.load, PAYLOADS, client))
    assert len(result["errors"]) == len(PAYLOADS)  # each request its own error, none lost or doubled
    assert all(says in error for error in result["errors"])
    assert len(result["latencies_s"]) == len(PAYLOADS)
    assert result["answered_items"] == 0  # a failed request's inputs are not served items


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_a_stream_out_of_step_is_an_error_not_a_served_request(bench: Any, client: str) -> None:
    """A byte after the body Content-Length announced: the next answer on that connection cannot be
    trusted, so it counts as an error (and the client reconnects) rather than as served."""
    result, _ = asyncio.run(serve_canned("stray", bench.load, PAYLOADS, client))
    assert result["errors"]
    assert result["answered_items"] < sum(len(inputs) for inputs in PAYLOADS)
    assert len(result["latencies_s"]) == len(PAYLOADS)
