"""What the service holds (the backbone, each dataset's index and query backbone, the heads) and the
batch calls the batcher runs in its worker thread.

Every result is computed by the functions the CLI calls: ``/v1/embed`` by :func:`hubtune.embedding.
embed_values` through the store (so its rows are the vectors ``export`` writes), ``/v1/search`` by
``index.neighbours`` (``ensure_index``, ``query_vectors``, ``embed_queries``, ``with_query_prompt``,
``search_dataset``, as ``hubtune search``), ``/v1/predict`` by a loaded head's ``predict_proba`` (as
``hubtune predict``). One backbone is loaded per process and shared wherever a fingerprint allows:
by ``/v1/embed``, by the datasets extracted with it and by the heads trained on its vectors.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence, cast

from hubtune.errors import NotFoundError, RequestError, ServeError
from hubtune.serve.config import ServeConfig

if TYPE_CHECKING:
    import numpy as np

    from hubtune.backbone import Backbone
    from hubtune.heads.protocol import HeadMethods
    from hubtune.index.neighbours import DatasetIndex

logger = logging.getLogger("hubtune.serve")
DTYPES = ("float16", "float32")
CPU_TEXT_TOKENS = 256  # padded tokens per forward of texts on a CPU (see Service.embed_settings)
CPU_IMAGE_FORWARD = 4  # images per forward on a CPU


def kind_of(value: Any) -> str:
    return "image" if isinstance(value, bytes) else "text"


def names_item(query: Any) -> bool:
    """``row:N`` / ``key:HEX``: a query naming an item of the dataset (as ``hubtune search`` reads it)."""
    return isinstance(query, str) and ((query.startswith("row:") and query[4:].isdigit()) or query.startswith("key:"))


@dataclass
class Searchable:
    """A dataset the service searches: its index and vectors, and the backbone that embeds its queries."""

    name: str
    fingerprint: str
    found: "DatasetIndex"
    backbone: "Backbone"  # the query backbone: the dataset's options, with the model's query prompt
    modality: str  # what the dataset's items are

    @property
    def rows(self) -> int:
        return len(self.found.data.keys)


@dataclass
class Service:
    """The loaded model, datasets and heads; :meth:`load` fills it (at startup, in a thread)."""

    config: ServeConfig
    datasets: dict[str, Searchable] = field(default_factory=dict)
    heads: dict[str, "HeadMethods"] = field(default_factory=dict)
    main: "Backbone | None" = None
    keeper: Any = None  # hubtune.embedding.Backbones: /v1/embed's backbone per tower
    store: Any = None  # the EmbeddingStore at config.cache, open while the service is loaded (close())
    ready: bool = False
    error: BaseException | None = None  # why loading failed (the process then stops)

    # -- loading --------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the backbone, each dataset's index (built when missing) and each head (refused when its
        fingerprint is not this backbone's); the store is closed again when any of it fails."""
        from hubtune.store import EmbeddingStore

        config = self.config
        if config.datasets and not (Path(config.cache) / "data.mdb").is_file():  # a mistyped --cache: no new store
            raise ServeError(f"no embedding store at {config.cache}, so no dataset {config.datasets[0]!r} to search: "
                             f"hubtune extract {config.ref} DATA --cache {config.cache} --dataset NAME first")
        self.store = EmbeddingStore(config.cache)  # one handle for every batch (its threads share it)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        from hubtune.api import load_backbone
        from hubtune.embedding import Backbones

        config = self.config
        known = set(self.store.datasets())
        missing = [name for name in config.datasets if name not in known]
        if missing:  # before minutes of loading the model
            raise ServeError(f"no dataset {missing[0]!r} in {config.cache}; it holds: "
                             f"{', '.join(sorted(known)) or 'none'}")
        self.main = load_backbone(config.ref, config.options)
        self.keeper = Backbones(config.ref, config.options)
        self.keeper.loaded[self.main.modality] = self.main
        options = config.options
        if self.main.tower is not None and not (options.layer or options.pool or options.prompt or options.prompt_text):
            # a two-tower model's other tower, sharing the loaded weights (what options_for(other) loads anew)
            other = "text" if self.main.modality == "image" else "image"
            self.keeper.loaded[other] = self.main.tower_backbone(other)
        for name in config.datasets:
            self.datasets[name] = self.open_dataset(name)
        for name, folder in config.head_paths().items():
            self.heads[name] = self.open_head(name, folder)
        self.ready = True

    def close(self) -> None:
        """Close the store (the process keeps the model until it exits)."""
        if self.store is not None:
            self.store.close()
            self.store = None
        self.ready = False

    def backbones(self) -> list["Backbone"]:
        """The backbones already loaded (and, for a two-tower model, its other tower, which shares them)."""
        assert self.main is not None
        found = list(self.keeper.loaded.values())
        if self.main.tower is not None:
            other = "text" if self.main.modality == "image" else "image"
            try:
                found.append(self.main.tower_backbone(other))
            except Exception:  # noqa: BLE001 (a tower that cannot share this space: not a candidate)
                pass
        return found

    def shared(self, fingerprint: str, dtype: str) -> "Backbone | None":
        return next((b for b in self.backbones() if b.fingerprint(dtype) == fingerprint), None)

    def open_dataset(self, name: str) -> Searchable:
        """``name``'s index, found and built as ``hubtune index build`` / ``search`` do."""
        from hubtune.api import load_backbone
        from hubtune.errors import BackboneOptionError
        from hubtune.index.neighbours import ensure_index, with_query_prompt
        from hubtune.store.lookup import find_fingerprint, resolved_options

        config, store = self.config, self.store
        fingerprint = find_fingerprint(store, config.ref, name, config.options)
        found = ensure_index(store, fingerprint, name)
        dtype = store.fingerprints()[fingerprint]["dtype"]
        exact = resolved_options(store, fingerprint, config.options)
        backbone = self.shared(fingerprint, dtype)
        if backbone is None or "query" in backbone.prompts():  # the query prompt is set on its own copy
            backbone = load_backbone(config.ref, exact)
            if backbone.fingerprint(dtype) != fingerprint:
                raise BackboneOptionError(
                    f"{config.ref} with these options embeds as {backbone.fingerprint(dtype)}, but dataset "
                    f"{name!r} was extracted as {fingerprint}; pass the options extract was given")
        logger.info("dataset %s: %d rows, %s index (%s)", name, len(found.data.keys), found.spec.kind,
                    "built" if found.built else "loaded")
        return Searchable(name, fingerprint, found, with_query_prompt(backbone, None), backbone.modality)

    def open_head(self, name: str, folder: Path) -> "HeadMethods":
        """The head in ``folder``, sharing this service's backbone; refused when it reads another's vectors."""
        from hubtune.heads.use import load_head

        assert self.main is not None
        head = load_head(folder, self.config.cache)
        wanted = head.model["fingerprint"]
        backbone = next((b for b in self.backbones() for dtype in DTYPES if b.fingerprint(dtype) == wanted), None)
        if backbone is None and head.kind == "finetune":
            raise ServeError(
                f"head {name!r} ({folder}) is fine-tuned: it embeds with its own trained blocks "
                f"(fingerprint {wanted}), not with {self.config.ref}'s frozen ones, and hubtune serve runs one "
                "backbone per process. Use `hubtune predict` for it, or serve a head trained on the frozen "
                "vectors (`hubtune train --head linear|mlp|knn`)")
        if backbone is None:
            raise ServeError(
                f"head {name!r} ({folder}) reads vectors of fingerprint {wanted} ({head.model.get('ref')}), but "
                f"this service's backbone {self.config.ref} embeds as {self.main.fingerprint()}: serve the head with "
                "the model and options it was trained with")
        head.loaded_backbone = backbone
        return head

    @staticmethod
    def thread_setup() -> Callable[[], None]:
        """What the model's worker thread runs first: this thread's torch (and faiss) thread counts.
        OpenMP keeps the count per thread and a new thread starts at 1, so without it the model would
        run on one core in the worker, and its sums, in another order, would differ from the CLI's."""
        import torch

        threads = torch.get_num_threads()

        def setup() -> None:
            torch.set_num_threads(threads)
            faiss = sys.modules.get("faiss")
            if faiss is not None:
                faiss.omp_set_num_threads(threads)

        return setup

    # -- what the routes ask ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The model, datasets and heads (``GET /v1/info``: what the page shows and offers)."""
        main = self.main
        if main is None:
            return {"ready": False}
        return {
            "ready": self.ready,
            "model": self.model_name(main),
            "fingerprint": main.fingerprint(),
            "modality": main.modality,
            "inputs": ["image", "text"] if main.tower is not None else [main.modality],
            "dim": main.dim,
            "datasets": [{"name": d.name, "rows": d.rows, "modality": d.modality, "fingerprint": d.fingerprint,
                          "queries": ["image", "text"] if d.backbone.tower is not None else [d.backbone.modality]}
                         for d in self.datasets.values()],
            "heads": [{"name": name, "kind": head.kind, "classes": list(head.classes),
                       "inputs": [head.backbone().modality]} for name, head in self.heads.items()],
            "limits": {"max_inputs": self.config.max_inputs, "max_text_chars": self.config.max_text_chars,
                       "max_body_bytes": self.config.max_body_bytes, "max_k": self.config.max_k},
        }

    @staticmethod
    def model_name(backbone: "Backbone") -> str:
        fields = backbone.fingerprint_fields()
        revision = fields.get("revision")  # none for a source without revisions (timm, torchvision)
        return f"{fields['source']}:{fields['model']}" + (f"@{revision}" if revision else "")

    def dataset(self, name: str) -> Searchable:
        if name not in self.datasets:
            offered = ", ".join(sorted(self.datasets)) or "none (start the service with --dataset NAME)"
            raise NotFoundError(f"no dataset {name!r} is served; served: {offered}")
        return self.datasets[name]

    def head(self, name: str | None) -> tuple[str, "HeadMethods"]:
        if name is None and len(self.heads) == 1:
            name = next(iter(self.heads))
        offered = ", ".join(sorted(self.heads)) or "none (start the service with --head FOLDER)"
        if name is None and self.heads:  # a field the request lacks: a bad request, not a missing head
            raise RequestError(f"head: field required when several heads are served: one of {offered}")
        if name is None or name not in self.heads:
            raise NotFoundError(f"no head {name!r} is served; served: {offered}" if name is not None
                                else f"no head is served: {offered}")
        return name, self.heads[name]

    def embed_kind(self, values: Sequence[Any]) -> str:
        """``text`` or ``image``: one kind per request, and one this model embeds."""
        assert self.main is not None
        kinds = {kind_of(value) for value in values}
        if len(kinds) > 1:
            raise RequestError("inputs mix texts and images; send one kind per request")
        kind = kinds.pop()
        if self.main.tower is None and kind != self.main.modality:
            raise RequestError(f"{self.config.ref} embeds {self.main.modality}s; the inputs are {kind}s")
        return kind

    def check_queries(self, dataset: Searchable, queries: Sequence[Any]) -> None:
        if dataset.backbone.tower is not None:  # a two-tower model: texts and images
            return
        modality = dataset.backbone.modality
        for index, query in enumerate(queries):
            if names_item(query) or kind_of(query) == modality:
                continue
            raise RequestError(f"queries[{index}] is {'an image' if modality == 'text' else 'a text'}, but dataset "
                               f"{dataset.name!r} is searched by {modality}s (or row:N / key:HEX naming one of its items)")

    def check_head_inputs(self, name: str, head: "HeadMethods", values: Sequence[Any]) -> None:
        modality = head.backbone().modality
        for index, value in enumerate(values):
            if kind_of(value) != modality:
                raise RequestError(f"inputs[{index}] is {'an image' if modality == 'text' else 'a text'}, but head "
                                   f"{name!r} classifies {modality}s")

    # -- the batch calls (the worker thread) ----------------------------------------------------------------
    def run(self, key: Hashable, jobs: Sequence[Any]) -> list[Any]:
        """One model call for the jobs of ``key``: ``("embed", kind)``, ``("search", dataset)`` or
        ``("predict", head)``; one result (or error) per job, in order."""
        action, target = cast("tuple[str, str]", key)
        if action == "embed":
            return self.embed_batch(target, jobs)
        if action == "search":
            return self.search_batch(self.datasets[target], jobs)
        return self.predict_batch(self.heads[target], jobs)

    def embed_settings(self, kind: str) -> Any:
        """How a served batch is cut into forwards. On a CPU: texts sorted by length into forwards of
        at most :data:`CPU_TEXT_TOKENS` padded tokens (many short texts or a few long ones: small
        matrices, little padding, forwards of about one cost), images :data:`CPU_IMAGE_FORWARD` at a
        time, run ``--streams`` at a time (default: extract's two one-thread streams), so both cores
        stay busy to the batch's end. On a GPU: the whole batch in one forward. Fixed forwards of 4
        texts served 0.6x of extract's items/s, of 16 (one long text pads the rest) 0.3x
        (benchmarks/bench_serve.py)."""
        from hubtune.embedding import Settings

        size, streams = self.config.max_batch_size, self.config.streams
        device = getattr(self.keeper.get(kind), "device", None)
        if device is not None and getattr(device, "type", "cpu") != "cpu":
            return Settings(batch_size=size, streams=streams)  # cpu_streams: 1 on CUDA
        if kind == "text":
            return Settings(batch_size=size, streams=streams, max_tokens=CPU_TEXT_TOKENS)
        return Settings(batch_size=min(size, CPU_IMAGE_FORWARD), streams=streams)

    def embed_batch(self, kind: str, jobs: Sequence[list[Any]]) -> list[Any]:
        from hubtune.embedding import embed_values, inputs_error

        values = [value for job in jobs for value in job]
        vectors, failed = embed_values(self.config.ref, values, self.store, self.config.options,
                                       self.embed_settings(kind), kind=kind, backbones=self.keeper)
        backbone = self.keeper.get(kind)
        results: list[Any] = []
        start = 0
        for job in jobs:
            own = [f for f in failed if start <= f.index < start + len(job)]
            if own:
                from dataclasses import replace

                results.append(inputs_error([replace(f, index=f.index - start) for f in own], len(job)))
            else:
                rows = vectors[start: start + len(job)]
                results.append({"model": self.model_name(backbone), "fingerprint": backbone.fingerprint(),
                                "dim": int(rows.shape[1]), "vectors": rows})  # float32: see serve.answers
            start += len(job)
        return results

    def query_rows(self, dataset: Searchable, queries: Sequence[Any]) -> "np.ndarray":
        """Query vectors: ``row:N`` / ``key:HEX`` read from the dataset, the rest embedded as ``search`` does."""
        import numpy as np

        from hubtune.index.neighbours import embed_queries, query_vectors

        data = dataset.found.data
        out = np.empty((len(queries), data.vectors.shape[1]), dtype=np.float32)
        named = [i for i, query in enumerate(queries) if names_item(query)]
        free = [i for i in range(len(queries)) if not names_item(queries[i])]
        if named:
            out[named] = query_vectors([queries[i] for i in named], data, lambda: None)
        if free:
            out[free] = embed_queries(dataset.backbone, [queries[i] for i in free])
        return out

    def search_batch(self, dataset: Searchable, jobs: Sequence[tuple[list[Any], int]]) -> list[Any]:
        from hubtune.index.neighbours import search_dataset

        queries = [query for job, _ in jobs for query in job]
        vectors = self.query_rows(dataset, queries)
        data = dataset.found.data
        results: list[Any] = []
        start = 0
        for job, k in jobs:
            hits = search_dataset(dataset.found, vectors[start: start + len(job)], k)
            results.append({"results": [[{"row": hit["row"], "key": data.keys[hit["row"]], "label": hit["label"],
                                          "score": hit["score"], "origin": hit["item"]} for hit in row]
                                        for row in hits]})
            start += len(job)
        return results

    def predict_batch(self, head: "HeadMethods", jobs: Sequence[list[Any]]) -> list[Any]:
        values = [value for job in jobs for value in job]
        probabilities = head.predict_proba(values)
        classes = list(head.classes)
        rows = [{"label": classes[int(p.argmax())], "score": round(float(p.max()), 6),
                 "scores": {name: round(float(v), 6) for name, v in zip(classes, p)}} for p in probabilities]
        results: list[Any] = []
        start = 0
        for job in jobs:
            results.append({"predictions": rows[start: start + len(job)]})
            start += len(job)
        return results
