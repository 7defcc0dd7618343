"""Shared pieces of the reliability tests: forked children, figures printed in pytest's output.

Spawning ``hubtune`` costs seconds of torch import each time; the harnesses instead fork the test
process, which has already imported torch and hubtune, and run the work in the child. Children use
one torch thread (as DataLoader workers do) and leave through ``os._exit`` so nothing of pytest runs
twice.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture(name="figure")
def figure_fixture(capsys: pytest.CaptureFixture, record_property: Callable) -> Callable[[str, str], None]:
    """``figure(name, text)``: print a measured figure past pytest's capture and record it."""

    def emit(name: str, text: str) -> None:
        record_property(name, text)
        with capsys.disabled():
            print(f"\n[reliability] {name}: {text}", flush=True)

    return emit


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


def start(work: Callable[[], Any], *, stderr_to: Path | None = None) -> int:
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


def wait(pid: int, timeout: float) -> int | None:
    """Exit code of ``pid``, ``-signal`` if it was killed, or None (and SIGKILLed) past ``timeout``."""
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


def call(work: Callable[[], Any], *, timeout: float = 120.0) -> Any:
    """Run ``work()`` in a forked child and return its JSON-able result; raise if it failed or hung."""
    read_end, write_end = os.pipe()

    def child() -> None:
        os.close(read_end)
        payload = json.dumps(work()).encode()
        with os.fdopen(write_end, "wb") as stream:
            stream.write(payload)

    pid = start(child)
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
    code = wait(pid, max(1.0, deadline - time.monotonic()))
    if code is None:
        raise AssertionError(f"forked child hung for more than {timeout} s")
    if code != 0:
        raise AssertionError(f"forked child failed with exit code {code} (its traceback is on stderr)")
    return json.loads(b"".join(chunks))
