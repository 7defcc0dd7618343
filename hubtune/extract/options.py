"""What an extraction run is asked for, and what it reports: one type each, for the local extractor
and the sharded engines (Ray, torchrun) alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hubtune.backbone import LoadOptions

#: the fields only a sharded run reports
SHARDED_FIELDS = ("shards", "shards_run", "merged", "shards_dir")


@dataclass(frozen=True)
class ExtractOptions:
    """The settings of one ``extract`` run (``hubtune extract``'s options, engines aside).

    ``options`` are the model options (they decide the fingerprint); the rest decides how the run
    goes, never which vectors it makes.
    """

    options: LoadOptions = field(default_factory=LoadOptions)
    dataset_name: str | None = None  # default: DATA's file or folder name
    batch_size: int = 64
    workers: int | None = 0  # DataLoader processes (local, torchrun ranks); the actor pool's size on Ray (None: auto)
    stored_dtype: str = "float16"
    max_failures: float | None = None  # fail past this fraction of unreadable items (after reporting)
    refresh: bool = False  # resolve the model again instead of reusing the fingerprint of the same request
    compile: bool = False
    progress: bool = True
    streams: int | None = None  # forwards at once (None: hubtune.extract.cpu_streams)


@dataclass
class ExtractSummary:
    """What ``hubtune extract`` reports, local or sharded. ``items_per_s`` is the embedding rate
    (model loading excluded locally); ``seconds`` is the whole call. The sharded fields stay None
    in a local run and are left out of its report."""

    dataset: str
    fingerprint: str | None
    total: int
    computed: int
    cached: int
    failed: int
    seconds: float
    items_per_s: float
    engine: str = "local"
    shards: int | None = None
    shards_run: int | None = None
    merged: bool | None = None
    shards_dir: str | None = None

    def as_dict(self) -> dict[str, Any]:
        report = asdict(self)
        if self.engine == "local":
            for name in SHARDED_FIELDS:
                report.pop(name)
        return report
