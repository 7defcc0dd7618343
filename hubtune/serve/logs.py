"""The service's lines on stderr: a startup line with the URL, then one access line per request
(method, path, status, latency in ms, and the model batch the request joined), as text or, with
``--json-logs``, as one JSON object per line (for a log shipper)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

logger = logging.getLogger("hubtune.serve")
access = logging.getLogger("hubtune.serve.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(json_logs: bool) -> None:
    """One stderr handler for ``hubtune.serve`` (text or JSON lines); replaces one set up before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    handler._hubtune_serve = True  # type: ignore[attr-defined]
    for old in [h for h in logger.handlers if getattr(h, "_hubtune_serve", False)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # python-multipart logs a malformed form on its own (the client gets a 4xx naming it): keep the
    # output one line per request, JSON with --json-logs
    logging.getLogger("multipart").setLevel(logging.CRITICAL)
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)


def startup_line(url: str, info: dict[str, Any]) -> None:
    datasets = ", ".join(d["name"] for d in info.get("datasets", [])) or "none"
    heads = ", ".join(h["name"] for h in info.get("heads", [])) or "none"
    logger.info("hubtune serve: ready at %s (model %s, datasets: %s, heads: %s; API schema at %s/openapi.json)",
                url, info.get("model"), datasets, heads, url,
                extra={"fields": {"event": "ready", "url": url, "model": info.get("model"),
                                  "datasets": datasets, "heads": heads}})


class AccessLog:
    """ASGI middleware: one line per HTTP request once its answer is sent."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            ms = (time.perf_counter() - started) * 1000
            batch = (scope.get("state") or {}).get("batch_size")
            path = scope.get("path", "")
            access.info("%s %s %d %.1f ms%s", scope.get("method"), path, status, ms,
                        f" batch={batch}" if batch else "",
                        extra={"fields": {"event": "access", "method": scope.get("method"), "path": path,
                                          "status": status, "ms": round(ms, 2), "batch_size": batch,
                                          "client": (scope.get("client") or ("", 0))[0]}})
