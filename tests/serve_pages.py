"""What the browser tests of ``hubtune serve``'s page share: headless chromium, a watched tab, the CLI
in this process, and the server in a subprocess (tests/test_serve_page.py: a text-image model;
tests/test_serve_page_modalities.py: a text-only and an image-only one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("HUBTUNE_CHROMIUM", "/usr/bin/chromium")


def launched_browser() -> Iterator[Any]:
    """Headless chromium; skips only when playwright or chromium is missing (ask it first, before a model
    or a server is built)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]'; scripts/setup installs it)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; scripts/setup installs it)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def watched_page(browser: Any, errors: list[str], height: int = 400) -> Any:
    """A fresh tab (its own sessionStorage) that counts the page's /v1/search calls and keeps its JS errors."""
    page = browser.new_context(viewport={"width": 1100, "height": height}).new_page()
    page.add_init_script("""window.__searches = 0;
        const f = window.fetch; window.fetch = (u, o) => {
          if (String(u).endsWith('/v1/search')) window.__searches++; return f(u, o); };""")
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def search_done(page: Any, before: int) -> None:
    """The page has answered a query started after ``before`` searches."""
    page.wait_for_function(
        "b => window.__searches > b && !document.body.hasAttribute('aria-busy')", arg=before, timeout=60_000)


def cli_json(*args: str) -> Any:
    """``hubtune ARGS --json`` in this process (click's runner); its JSON."""
    from click.testing import CliRunner

    from hubtune.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout)


def served_url(command: list[str], log: Path, env: dict[str, str]) -> Iterator[str]:
    """``command`` (a ``hubtune serve ... --port 0``) in a subprocess; yields its URL (read from its log)
    once /readyz answers 200; stopped after."""
    import httpx

    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url: str | None = None
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"hubtune serve exited {process.returncode}:\n{log.read_text()[-3000:]}")
            if url is None:  # the startup lines name the URL once the socket is bound
                match = re.search(r"http://127\.0\.0\.1:[1-9]\d*", log.read_text())
                url = match.group(0) if match else None
            try:
                if url and httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"hubtune serve not ready in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
