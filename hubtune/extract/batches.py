"""Batches for the extractor: items read, decoded and preprocessed, then collated.

Three ways in, one shape out (``(positions, collated batch or None, [(position, reason)])``):
:func:`loader_batches` (a DataLoader whose worker processes read and preprocess),
:func:`windowed_batches` (in process, a window of items at once: batched tokenising) and
:func:`prepared_batches` (samples already preprocessed elsewhere, e.g. the Ray decode actors).
An item that cannot be read or preprocessed becomes a ``(position, reason)``, never an exception.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Sequence

from hubtune.data import Item
from hubtune.errors import InputError

if TYPE_CHECKING:
    from hubtune.backbone import Backbone, Preprocessor


# -- DataLoader pieces (module level: picklable for spawn workers) ----------------------------------
class _ItemDataset:
    """Items -> (position, sample or None, error or None); runs in DataLoader workers."""

    def __init__(self, items: Sequence[Item], preprocessor: "Preprocessor"):
        self.items = items
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            return index, self.preprocessor(self.items[index].raw()), None
        except InputError as exc:
            return index, None, str(exc)
        except OSError as exc:
            return index, None, f"cannot read: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a preprocessor bug on one odd input must not stop the run
            return index, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


class _Collate:
    def __init__(self, preprocessor: "Preprocessor"):
        self.preprocessor = preprocessor

    def __call__(self, rows: list[tuple[int, Any, str | None]]) -> tuple[list[int], Any, list[tuple[int, str]]]:
        good = [(i, sample) for i, sample, error in rows if error is None]
        bad = [(i, error) for i, _, error in rows if error is not None]
        batch = self.preprocessor.collate([s for _, s in good]) if good else None
        return [i for i, _ in good], batch, bad


def loader_batches(backbone: "Backbone", todo: list[Item], batch_size: int, workers: int) -> Iterator:
    """Batches from a DataLoader whose worker processes read, decode and preprocess."""
    from torch.utils.data import DataLoader

    if backbone.modality == "text":  # similar lengths together: less padding; the store is keyed
        order = sorted(range(len(todo)), key=lambda i: -len(todo[i].text or ""))
        todo = [todo[i] for i in order]
    else:
        order = list(range(len(todo)))
    loader = DataLoader(
        _ItemDataset(todo, backbone.preprocessor), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_Collate(backbone.preprocessor), pin_memory=backbone.device.type == "cuda", prefetch_factor=4,
    )
    started = iter(loader)  # forks the workers now, before the caller starts its writer thread
    return (
        ([order[i] for i in positions], batch, [(order[i], reason) for i, reason in bad])
        for positions, batch, bad in started
    )


def _raw(item: Item) -> Any:
    try:
        return item.raw()
    except OSError as exc:
        return InputError(f"cannot read: {type(exc).__name__}: {exc}")


def prepare_items(preprocessor: "Preprocessor", items: Sequence[Item]) -> list[Any]:
    """Each item read and preprocessed (batched where the preprocessor can: tokenisers), or its
    :class:`InputError`. Also what the Ray engine's CPU decode actors run on a shard."""
    raws = [_raw(item) for item in items]
    readable = [i for i, raw in enumerate(raws) if not isinstance(raw, InputError)]
    prepared: list[Any] = list(raws)
    for i, sample in zip(readable, preprocessor.prepare_many([raws[i] for i in readable])):
        prepared[i] = sample
    return prepared


def forward_chunks(order: Sequence[int], lengths: "dict[int, int] | None", batch_size: int,
                   max_tokens: int | None) -> Iterator[list[int]]:
    """``order`` cut into forwards of at most ``batch_size`` samples; with ``max_tokens`` (and
    ``order`` sorted longest first), also at most that many padded tokens (rows x the longest).

    A budget keeps a CPU forward's matrices small whatever the lengths: many short texts in one
    forward, few long ones. ``hubtune serve`` cuts its batches this way (benchmarks/bench_serve.py)."""
    if max_tokens is None or lengths is None:
        for offset in range(0, len(order), batch_size):
            yield list(order[offset : offset + batch_size])
        return
    chunk: list[int] = []
    for index in order:
        if chunk and (len(chunk) >= batch_size or (len(chunk) + 1) * lengths[chunk[0]] > max_tokens):
            yield chunk
            chunk = []
        chunk.append(index)
    if chunk:
        yield chunk


def prepared_batches(preprocessor: "Preprocessor", prepared: Sequence[Any], start: int, batch_size: int,
                     max_tokens: int | None = None) -> Iterator:
    """``(positions, collated batch, [(position, reason)])`` over prepared samples; when the
    preprocessor knows sample lengths, batches hold samples of similar length (less padding), and
    ``max_tokens`` bounds a batch's padded tokens (see :func:`forward_chunks`)."""
    bad = [(start + i, str(p)) for i, p in enumerate(prepared) if isinstance(p, InputError)]
    good = [i for i, p in enumerate(prepared) if not isinstance(p, InputError)]
    measured = {i: preprocessor.length(prepared[i]) for i in good}
    lengths = {i: n for i, n in measured.items() if n is not None} if None not in measured.values() else None
    if lengths is not None:
        good.sort(key=lambda i: -lengths[i])
    if bad and not good:
        yield [], None, bad
    for number, chunk in enumerate(forward_chunks(good, lengths, batch_size, max_tokens)):
        yield [start + i for i in chunk], preprocessor.collate([prepared[i] for i in chunk]), bad if number == 0 else []


def windowed_batches(preprocessor: "Preprocessor", todo: list[Item], batch_size: int, window: int,
                     max_tokens: int | None = None) -> Iterator:
    """In-process batches: preprocess a window of items at once (batched tokenising), then batch it."""
    for start in range(0, len(todo), window):
        yield from prepared_batches(preprocessor, prepare_items(preprocessor, todo[start : start + window]), start,
                                    batch_size, max_tokens)
