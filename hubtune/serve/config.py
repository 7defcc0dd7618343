"""Every setting of ``hubtune serve`` in one object, so the CLI, the tests and a Python caller build the
same app (``create_app(ServeConfig(...))``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubtune.backbone import LoadOptions
from hubtune.imageio import MAX_IMAGE_PIXELS

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeConfig:
    """What ``hubtune serve`` loads and how it answers.

    The limits are per request and each has a CLI option; the defaults keep one request small enough
    that a handful of clients cannot exhaust the process (a 10 MB text or 10,000 inputs is refused).
    """

    ref: str  # the model reference; one backbone per process
    cache: Path  # the embedding store (read, and filled with the vectors of what is embedded)
    datasets: list[str] = field(default_factory=list)  # datasets to search (their indexes built when missing)
    heads: list[str] = field(default_factory=list)  # head folders, or NAME=FOLDER
    options: LoadOptions = field(default_factory=LoadOptions)  # the shared model options
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 128  # inputs per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    streams: int | None = None  # forwards of a batch at once (None: as extract, 2 on a 2+-thread CPU, 1 on CUDA)
    max_queue: int = 256  # requests waiting for the model; past it: 503 + Retry-After
    max_inputs: int = 256  # inputs (or queries) per request; past it: 413
    max_text_chars: int = 20_000  # characters per text; past it: 413
    max_body_bytes: int = 32 << 20  # bytes per request body (JSON or multipart); past it: 413
    max_image_pixels: int = MAX_IMAGE_PIXELS  # width x height of an image input; past it: 413
    max_k: int = 100  # neighbours per search query
    request_timeout: float = 60.0  # seconds a request may wait for its answer; past it: 504
    token: str | None = None  # bearer token required on /v1 routes (None: open)
    json_logs: bool = False  # access and startup lines as JSON
    thumbnail_px: int = 256  # the longer side of an item's thumbnail

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port if port is not None else self.port}"

    def head_paths(self) -> dict[str, Path]:
        """Head name -> folder: ``NAME=FOLDER``, or the folder's own name."""
        named: dict[str, Path] = {}
        for given in self.heads:
            name, _, folder = given.rpartition("=") if "=" in given else ("", "", given)
            path = Path(folder).expanduser()
            named_as = name or path.resolve().name
            if named_as in named:
                from hubtune.errors import ServeError

                raise ServeError(f"two heads are named {named_as!r}; name them apart with --head NAME=FOLDER")
            named[named_as] = path
        return named
