"""``hubtune.embed``: vectors for a list of inputs (or a dataset), through the store or straight from the model.

With a cache the store is read and filled as ``hubtune extract`` fills it: the same fingerprint (the
backbone's), the same content keys (blake2b-128 of a file's bytes, of a text's UTF-8 bytes, of bytes
given as such), the same error records for inputs that cannot be embedded, and the same request memo,
so inputs the store already holds are answered without loading the model. No dataset manifest is
recorded (that is :meth:`hubtune.Cache.extract`'s job). Without a cache the model just embeds.

What an input is: a ``str`` is a text, or an image path when the model embeds images (or ``tower="image"``,
or when it names an existing image file); a :class:`pathlib.Path`, ``bytes`` and PIL images are images.
A PIL image has no file bytes: its key is the blake2b-128 of its size and RGB pixels.

This module is also what a head (:mod:`hubtune.heads.use`) and the scikit-learn ``Embedder`` embed
raw inputs with; :class:`Backbones` keeps their loaded backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping, NamedTuple, Sequence, overload

from hubtune.backbone import LoadOptions
from hubtune.data import IMAGE_SUFFIXES, Item, content_key, open_dataset
from hubtune.data.items import file_key, text_key
from hubtune.errors import BackboneOptionError, DatasetError, InputError, TowerError
from hubtune.options import MODEL_OPTIONS, load_options

if TYPE_CHECKING:
    import numpy as np

    from hubtune.backbone import Backbone
    from hubtune.store import EmbeddingStore

#: the run settings ``embed`` takes besides them
EMBED_SETTINGS = ("batch_size", "stored_dtype", "streams", "workers")
ORIGIN = "hubtune.embed"  # the origin an error record names for an input that is not a file


@dataclass(frozen=True, order=True)
class Failure:
    """An input that could not be embedded: its position, how it is shown, and why."""

    index: int
    input: str
    reason: str


class Embedded(NamedTuple):
    """What ``embed(..., errors="skip")`` returns: ``vectors`` (NaN rows for the failed inputs) and ``failed``."""

    vectors: "np.ndarray"
    failed: list[Failure]

    def __repr__(self) -> str:  # short: the rows are not worth printing
        return (f"Embedded(vectors=<{self.vectors.dtype} array {self.vectors.shape}>, "
                f"failed={len(self.failed)} at {[f.index for f in self.failed][:10]})")


@dataclass(frozen=True)
class ImageItem(Item):
    """An in-memory PIL image: keyed by its size and RGB pixels, handed to the preprocessor as is."""

    image: Any = None

    def raw(self) -> Any:
        return self.image


def shown(value: Any) -> str:
    """An input as an error message names it."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "size") and hasattr(value, "mode") and not isinstance(value, (str, Path)):
        return f"<PIL image {value.mode} {value.size[0]}x{value.size[1]}>"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<{value.dtype} array {tuple(value.shape)}>"
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_image_object(value: Any) -> bool:
    import sys

    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(value, pil.Image)


def _is_array(value: Any) -> bool:
    import sys

    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


#: why an array is no input (a head's ``predict`` takes a 2-D array of vectors; nothing takes one as an image)
ARRAY_INPUT = "numpy arrays are not accepted as images; use PIL.Image.fromarray(array)"


def input_kind(values: Sequence[Any], tower: str | None) -> str:
    """``image`` or ``text``: ``tower`` when given; else image when any input is a Path, bytes or a PIL
    image, or a str naming an existing image file; else text."""
    if tower is not None:
        return tower
    for value in values:
        if isinstance(value, (Path, bytes, bytearray, memoryview)) or _is_image_object(value):
            return "image"
        if isinstance(value, str) and Path(value).suffix.lower() in IMAGE_SUFFIXES and Path(value).is_file():
            return "image"
    return "text"


def _item(value: Any, kind: str) -> Item | str:
    """The item for one input of ``kind``, or why it cannot be one."""
    if _is_array(value):
        return ARRAY_INPUT
    if kind == "text":
        if isinstance(value, str):
            return Item(text_key(value), None, "train", ORIGIN, text=value)
        return f"a text model takes texts, got {type(value).__name__}"
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            return "no such file (an image model takes image paths, bytes or PIL images)"
        path = path.resolve()
        return Item(file_key(path), None, "train", str(path), path=str(path))
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return Item(content_key(data), None, "train", ORIGIN, data=data)
    if _is_image_object(value):
        rgb = value.convert("RGB")
        key = content_key(b"hubtune:pil-rgb:%dx%d:" % rgb.size + rgb.tobytes())
        return ImageItem(key, None, "train", ORIGIN, image=rgb)
    return f"expected a text, an image path, bytes or a PIL image, got {type(value).__name__}"


def to_items(values: Sequence[Any], kind: str) -> tuple[list[Item | None], list[Failure]]:
    """One item per input (None where it cannot be one, with its :class:`Failure`)."""
    items: list[Item | None] = []
    failed = []
    for index, value in enumerate(values):
        made = _item(value, kind)
        if isinstance(made, str):
            failed.append(Failure(index, shown(value), made))
            items.append(None)
        else:
            items.append(made)
    return items, failed


class Backbones:
    """A reference's backbone, loaded once per tower on first use (what a head or an Embedder keeps)."""

    def __init__(self, ref: str, options: LoadOptions):
        self.ref = ref
        self.options = options
        self.loaded: dict[str, "Backbone"] = {}

    def options_for(self, kind: str) -> LoadOptions:
        return replace(self.options, tower=self.options.tower or kind)

    def get(self, kind: str) -> "Backbone":
        if kind not in self.loaded:
            from hubtune.api import load_backbone

            self.loaded[kind] = load_backbone(self.ref, self.options_for(kind))
        return self.loaded[kind]


def computed(backbone: "Backbone", todo: Sequence[Item], settings: "Settings",
             ) -> Iterator[tuple[list[int], "np.ndarray | None", list[tuple[int, str]]]]:
    """``(positions, float32 vectors, [(position, reason)])`` per batch, as the extractor computes them."""
    from hubtune.extract.batches import loader_batches, windowed_batches
    from hubtune.extract.streams import cpu_streams, embedded_batches

    batch_size = settings.batch_size
    if settings.workers:
        batches = loader_batches(backbone, list(todo), batch_size, settings.workers)
    else:
        window = batch_size * (64 if backbone.modality == "text" else 1)
        batches = windowed_batches(backbone.preprocessor, list(todo), batch_size, window, settings.max_tokens)
    streams = settings.streams if settings.streams is not None else cpu_streams(backbone)
    for positions, vectors, bad in embedded_batches(backbone, batches, [batch_size], streams):
        yield positions, None if vectors is None else vectors.numpy(), bad


@dataclass
class Settings:
    """How the vectors are made and kept (never which: that is the backbone's)."""

    stored_dtype: str = "float16"
    batch_size: int = 64
    workers: int = 0
    streams: int | None = None
    max_tokens: int | None = None  # padded tokens per forward of texts (None: batch_size rows whatever their length)

    def __post_init__(self) -> None:  # refused before any work, naming the setting
        if self.stored_dtype not in ("float16", "float32"):
            raise BackboneOptionError(f"stored_dtype={self.stored_dtype!r}; expected 'float16' or 'float32'")
        for name, least in (("batch_size", 1), ("workers", 0), ("streams", 1), ("max_tokens", 1)):
            value = getattr(self, name)
            whole = isinstance(value, int) and not isinstance(value, bool)
            optional = name in ("streams", "max_tokens")
            if (value is not None or not optional) and not (whole and value >= least):
                raise BackboneOptionError(f"{name}={value!r}; expected a whole number of at least {least}"
                                          + (" (or None)" if optional else ""))


def _fill(store: "EmbeddingStore", backbone: "Backbone", fingerprint: str, todo: list[Item], settings: Settings) -> None:
    """Embed ``todo`` into the store under ``fingerprint``: vectors, and error records for what fails."""
    import numpy as np

    from hubtune.extract.streams import StoreWriter

    writer = StoreWriter(store, fingerprint)
    writer.start()
    try:
        for positions, vectors, bad in computed(backbone, todo, settings):
            keys = [todo[i].key for i in positions]
            rows = vectors.astype(settings.stored_dtype) if vectors is not None else np.zeros((0, 1), settings.stored_dtype)
            errors = {todo[i].key: {"reason": reason, "origin": todo[i].origin} for i, reason in bad}
            writer.put((keys, rows, errors))
    finally:
        writer.close()


def vectors_by_key(items: Sequence[Item], backbone: Callable[[], "Backbone"], store: "EmbeddingStore | None",
                   request: dict[str, Any] | None, settings: Settings,
                   fingerprint: str | None = None) -> tuple[dict[bytes, Any], dict[bytes, str], int]:
    """``({key: vector}, {key: reason}, dim)`` for unique ``items``. With a store: what it holds is read, the
    rest embedded into it; ``request`` (the extract request record, None for a backbone handed in) or the
    ``fingerprint`` the vectors must have (a head's) finds them without loading the model. Without a
    store: embedded, nothing kept."""
    from hubtune.extract.run import pending_items

    if store is None:
        model = backbone()
        found: dict[bytes, Any] = {}
        reasons: dict[bytes, str] = {}
        for positions, vectors, bad in computed(model, items, settings):
            found.update((items[i].key, row) for i, row in zip(positions, vectors if vectors is not None else []))
            reasons.update((items[i].key, reason) for i, reason in bad)
        return found, reasons, model.dim
    recalled = None
    if fingerprint is None or fingerprint not in store.fingerprints():
        fingerprint = recalled = store.recall_request(request) if request is not None else None
    if fingerprint is None or pending_items(store, fingerprint, list(items)):
        model = backbone()
        fingerprint = model.fingerprint(settings.stored_dtype)
        if fingerprint not in store.fingerprints():  # each a synced write: only when new (serve calls this per batch)
            store.register(fingerprint, model.fingerprint_fields(settings.stored_dtype), model.dim, settings.stored_dtype)
        if request is not None and recalled != fingerprint:
            store.remember_request(request, fingerprint)
        todo = pending_items(store, fingerprint, list(items))
        if todo:
            _fill(store, model, fingerprint, todo, settings)
    keys = [item.key for item in items]
    present = [key for key, has in zip(keys, store.has(fingerprint, keys)) if has]
    stored: Any = store.get(fingerprint, present) if present else []
    errors = store.errors(fingerprint)
    reasons = {key: str(errors[key].get("reason")) for key in keys if key in errors}
    return dict(zip(present, stored)), reasons, int(store.fingerprints()[fingerprint]["dim"])


def assemble(items: Sequence[Item | None], names: Sequence[str], failed: list[Failure],
             found: Mapping[bytes, Any], reasons: Mapping[bytes, str], dim: int) -> tuple["np.ndarray", list[Failure]]:
    """One float32 row per input, in input order (NaN for a failed one), and every failure by position."""
    import numpy as np

    out = np.full((len(items), dim), np.nan, dtype=np.float32)
    failures = list(failed)
    for index, item in enumerate(items):
        if item is None:
            continue
        if item.key in found:
            out[index] = found[item.key]
        else:
            failures.append(Failure(index, names[index], reasons.get(item.key, "not embedded")))
    return out, sorted(failures)


def failure_message(failed: Sequence[Failure], total: int) -> str:
    return (f"{len(failed)} of the {total} inputs cannot be embedded: "
            + "; ".join(f"#{f.index} {f.input}: {f.reason}" for f in failed))


def embed_items(items: list[Item | None], names: Sequence[str], failed: list[Failure],
                backbone: Callable[[], "Backbone"], cache: Any, request: dict[str, Any] | None,
                settings: Settings) -> tuple["np.ndarray", list[Failure]]:
    """Rows for ``items`` (None: already failed) through the store at ``cache`` (a path, a Cache, an
    open :class:`~hubtune.store.EmbeddingStore` kept open by its caller, or None)."""
    from hubtune.store import EmbeddingStore

    unique = list({item.key: item for item in items if item is not None}.values())
    if cache is None or isinstance(cache, EmbeddingStore):
        found, reasons, dim = vectors_by_key(unique, backbone, cache, request if cache is not None else None, settings)
        return assemble(items, names, failed, found, reasons, dim)
    with EmbeddingStore(Path(cache)) as store:
        found, reasons, dim = vectors_by_key(unique, backbone, store, request, settings)
    return assemble(items, names, failed, found, reasons, dim)


def _inputs(inputs: Any) -> tuple[list[Any], list[Item | None] | None, list[str] | None, str | None]:
    """``(values, items, names, kind)``: a dataset path gives its items (in its order) and kind."""
    if isinstance(inputs, (str, Path)):
        if not Path(inputs).expanduser().exists():
            raise DatasetError(f"{inputs}: no such dataset; to embed one text, pass a list: [text]")
        dataset = open_dataset(inputs)
        listed = dataset.items()
        return list(listed), list(listed), [item.origin for item in listed], dataset.modality
    if isinstance(inputs, (bytes, bytearray)) or _is_image_object(inputs):
        raise TypeError("embed() takes a list of inputs (or a dataset path); wrap a single input in a list")
    if _is_array(inputs):
        raise TypeError(f"embed() takes a list of inputs (or a dataset path), not an array: {ARRAY_INPUT}")
    if isinstance(inputs, (Mapping, set, frozenset)):  # a dict would give its keys, a set an arbitrary order
        raise TypeError(f"embed() takes a list of inputs (or a dataset path), not a {type(inputs).__name__}; "
                        "pass a list, e.g. list(d.values()) or sorted(s)")
    return list(inputs), None, None, None


@overload
def embed(model: "str | Backbone", inputs: Any, *, cache: Any = ..., errors: Literal["raise"] = ...,
          options: LoadOptions | None = ..., **settings: Any) -> "np.ndarray": ...
@overload
def embed(model: "str | Backbone", inputs: Any, *, cache: Any = ..., errors: Literal["skip"],
          options: LoadOptions | None = ..., **settings: Any) -> Embedded: ...
def embed(model: "str | Backbone", inputs: Any, *, cache: Any = None, errors: str = "raise",
          options: LoadOptions | None = None, **settings: Any) -> "np.ndarray | Embedded":
    """Embed ``inputs`` with ``model``: a float32 ``(len(inputs), dim)`` array, one row per input, in order.

    ``model`` is a reference (``"hf:sentence-transformers/all-MiniLM-L6-v2"``) or a loaded backbone
    (:func:`hubtune.load_backbone`). ``inputs`` is a list of texts, image paths (str or Path), PIL images
    or image bytes, or a dataset path (a class folder, ``.jsonl``, ``.csv``, ``.tsv``: rows in its order).
    ``cache`` (a folder or a :class:`hubtune.Cache`) is read and filled as ``hubtune extract`` does; the
    rows are then the stored vectors (float16 unless ``stored_dtype="float32"``), the ones ``export``
    writes. ``settings`` are the model options (``layer``, ``pool``, ``precision``, ``device``, ``weights``,
    ``offline``, ``trust_remote_code``, ``prompt``, ``prompt_text``, ``dim``, ``tower``; or ``options=``, a
    :class:`~hubtune.LoadOptions`) and ``batch_size``, ``stored_dtype``, ``streams``, ``workers``.

    Inputs that cannot be embedded (a missing file, a broken image, an empty text) raise one
    :class:`~hubtune.errors.InputError` naming each by position and reason (its ``failures``); the others
    are embedded (and stored) first. With ``errors="skip"`` the result is ``Embedded(vectors, failed)``:
    NaN rows for those inputs, and the list of :class:`Failure` (``index``, ``input``, ``reason``).
    """
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors={errors!r}; expected 'raise' or 'skip'")
    unknown = sorted(set(settings) - set(EMBED_SETTINGS) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(f"embed() got unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                        f"it takes {', '.join(MODEL_OPTIONS + EMBED_SETTINGS)}")
    run = Settings(**{name: value for name, value in settings.items() if name in EMBED_SETTINGS})
    chosen = load_options(options, {k: v for k, v in settings.items() if k in MODEL_OPTIONS}, "embed")
    values, listed, names, dataset_kind = _inputs(inputs)
    vectors, failed = embed_values(model, values, cache, chosen, run, listed, names, dataset_kind)
    if errors == "skip":
        return Embedded(vectors, failed)
    if failed:
        raise inputs_error(failed, len(values))
    return vectors


def inputs_error(failed: list[Failure], total: int) -> InputError:
    """One error naming every failed input; ``failures`` lists them."""
    error = InputError(failure_message(failed, total))
    error.failures = failed  # type: ignore[attr-defined]
    return error


def embed_values(model: "str | Backbone", values: list[Any], cache: Any, options: LoadOptions, run: Settings,
                 listed: list[Item | None] | None = None, names: Sequence[str] | None = None,
                 kind: str | None = None, backbones: Backbones | None = None) -> tuple["np.ndarray", list[Failure]]:
    """The rows and failures for ``values`` (see :func:`embed`); ``backbones`` keeps the loaded model across calls."""
    from hubtune.store.requests import request_record

    names = names if names is not None else [shown(value) for value in values]
    if not isinstance(model, str):  # a loaded backbone: its own kind (or its other tower when asked)
        if replace(options, tower=None) != LoadOptions():
            raise TypeError("model options apply to a model reference; a loaded backbone has its own (tower aside)")
        given = model
        kind = kind or options.tower or ("image" if input_kind(values, None) == "image" else given.modality)
        items, failed = (listed, []) if listed is not None else to_items(values, kind)

        def loaded() -> "Backbone":
            return given if kind == given.modality else given.tower_backbone(str(kind))

        return embed_items(items, names, failed, loaded, cache, None, run)
    keeper = backbones or Backbones(model, options)
    guessed = kind is None and options.tower is None and all(isinstance(v, str) or _is_array(v) for v in values)
    kind = kind or input_kind(values, options.tower)
    for attempt in (kind, "image"):
        items, failed = (listed, []) if listed is not None else to_items(values, attempt)
        request = request_record(model, keeper.options_for(attempt), run.stored_dtype)
        try:
            return embed_items(items, names, failed, lambda: keeper.get(attempt), cache, request, run)
        except TowerError as exc:  # strings (or arrays) taken for texts, and the model embeds images: try images
            if not (guessed and attempt == "text" and exc.modality == "image"):
                raise
    raise AssertionError("unreachable")
