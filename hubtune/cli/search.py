"""CLI commands over a dataset's vectors: ``index build`` and ``search``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, emit, json_option, model_options, print_table, resolve_cache
from hubtune.index import KINDS, METRICS


def _memory(value: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = value.strip().lower().rstrip("b")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
    except ValueError:
        raise click.BadParameter(f"{value!r}; expected a size such as 512MB or 4GB") from None


def index_options(func: Any) -> Any:
    options = [
        click.option("--kind", type=click.Choice(KINDS), default="auto", show_default=True,
                     help="auto picks by rows and --max-memory: flat, then hnsw, then ivf, then ivfpq."),
        click.option("--metric", type=click.Choice(METRICS), default="cosine", show_default=True),
        click.option("--max-memory", default="4GB", show_default=True, help="Memory budget for --kind auto."),
        click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists to visit (stored as the default)."),
        click.option("--ef-search", type=click.IntRange(min=1), default=None, help="HNSW search breadth (stored as the default)."),
        click.option("--rebuild", is_flag=True, help="Build again even if a valid index is saved."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _dataset_index(cache_dir: Path | None, ref: str, dataset: str, options: Any, kind: str, metric: str,
                   max_memory: str, nprobe: int | None, ef_search: int | None, rebuild: bool) -> tuple[Any, str, Any]:
    from hubtune.index.neighbours import ensure_index
    from hubtune.store import EmbeddingStore
    from hubtune.store.lookup import find_fingerprint

    store = EmbeddingStore(resolve_cache(cache_dir))
    fingerprint = find_fingerprint(store, ref, dataset, options)
    found = ensure_index(store, fingerprint, dataset, kind=kind, metric=metric, max_memory=_memory(max_memory),
                         nprobe=nprobe, ef_search=ef_search, rebuild=rebuild)
    return store, fingerprint, found


@click.group("index")
def index_group() -> None:
    """FAISS indexes over a dataset's cached vectors."""


@index_group.command("build")
@cache_option
@click.option("--model", "ref", required=True, help="The model reference extract was given.")
@click.option("--dataset", "dataset_name", required=True)
@index_options
@model_options
@json_option
def index_build(cache_dir: Path | None, ref: str, dataset_name: str, kind: str, metric: str, max_memory: str,
                nprobe: int | None, ef_search: int | None, rebuild: bool, options: Any, as_json: bool) -> None:
    """Build (or confirm) the FAISS index of a dataset; a valid saved index is reused."""
    store, _, found = _dataset_index(cache_dir, ref, dataset_name, options, kind, metric, max_memory, nprobe,
                                     ef_search, rebuild)
    store.close()
    row = {"kind": found.spec.kind, "rows": int(found.index.ntotal), "path": str(found.path),
           "metric": found.spec.metric, "built": found.built, "nprobe": found.spec.nprobe,
           "ef_search": found.spec.ef_search}
    emit(row, as_json, lambda d: print_table([d], ["kind", "rows", "metric", "built", "path"]))


@click.command()
@click.argument("queries", nargs=-1, required=True)
@cache_option
@click.option("--model", "ref", required=True, help="The model reference extract was given.")
@click.option("--dataset", "dataset_name", required=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours per query.")
@click.option("--query-prompt", default=None, metavar="NAME",
              help="The model's prompt for text queries (default: its `query` prompt when it declares one, as "
              "sentence-transformers' encode_query does; '' for none). The dataset keeps its own prompt.")
@index_options
@model_options
@json_option
def search(queries: tuple[str, ...], cache_dir: Path | None, ref: str, dataset_name: str, k: int,
           query_prompt: str | None, kind: str, metric: str, max_memory: str, nprobe: int | None,
           ef_search: int | None, rebuild: bool, options: Any, as_json: bool) -> None:
    """Nearest dataset items to each QUERY.

    A QUERY is `row:N` or `key:HEX` (an item of the dataset: no model needed), an image path for an
    image model, or a text for a text model (embedded with the model's query prompt, if it has one).
    With a text-image model (CLIP, SigLIP) a QUERY that is an image file is embedded by its image
    tower and any other QUERY by its text tower, whichever tower embedded the dataset: texts search
    images, images search texts.
    Scores are cosine similarities (higher is nearer), or
    squared L2 distances with --metric l2 (lower is nearer).
    """
    from hubtune.api import load_backbone
    from hubtune.errors import BackboneOptionError
    from hubtune.errors import FingerprintLookupError
    from hubtune.index.neighbours import query_vectors, search_dataset, with_query_prompt
    from hubtune.store.lookup import resolved_options

    store, fingerprint, found = _dataset_index(cache_dir, ref, dataset_name, options, kind, metric, max_memory,
                                               nprobe, ef_search, rebuild)
    stored_dtype = store.fingerprints()[fingerprint]["dtype"]
    try:  # unset options: the values the vectors were made with
        exact: Any = resolved_options(store, fingerprint, options)
    except FingerprintLookupError as error:  # raised only when a query needs the model (row:N and key:HEX do not)
        exact = error
    store.close()

    def backbone() -> Any:
        if isinstance(exact, Exception):
            raise exact
        loaded = load_backbone(ref, exact)
        if loaded.fingerprint(stored_dtype) != fingerprint:
            raise BackboneOptionError(
                f"{ref} with these options embeds as {loaded.fingerprint(stored_dtype)}, but dataset "
                f"{dataset_name!r} was extracted as {fingerprint}; pass the options extract was given"
            )
        return with_query_prompt(loaded, query_prompt)

    results = search_dataset(found, query_vectors(list(queries), found.data, backbone), k)

    def table(data: list) -> None:
        for query, hits in zip(queries, data):
            print_table(hits, ["score", "label", "item"], f"nearest to {query!r}")

    emit(results, as_json, table)
