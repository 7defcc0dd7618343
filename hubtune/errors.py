"""Exceptions, grouped by area, in the style of huggingface_hub's ``errors.py``.

Each subclasses a builtin so callers can catch broadly (``ValueError``, ``LookupError``), and each
message says what was given, what was expected and how to fix it. ``exit_code`` is what the CLI
returns when the error reaches it: 2 for a bad argument (like click's usage errors), 1 otherwise.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator


class HubtuneError(Exception):
    """Base class of every error hubtune raises on purpose."""

    exit_code = 1


# -- how a message names an option: as its caller writes it -------------------------------------------
_FROM_CLI: ContextVar[bool] = ContextVar("hubtune_from_cli", default=False)


@contextmanager
def cli_caller() -> Iterator[None]:
    """Inside it, messages name options as the CLI spells them (``--dim 64``); outside, as keywords (``dim=64``)."""
    token = _FROM_CLI.set(True)
    try:
        yield
    finally:
        _FROM_CLI.reset(token)


def option(name: str, value: object = None, literal: str | None = None) -> str:
    """The option ``name`` (a keyword: ``prompt_text``), with ``value`` (as shown) when given, as the caller
    writes it: ``--prompt-text X`` from the CLI, ``prompt_text=X`` from Python (``literal``, where Python
    spells the value otherwise: ``'cpu'`` for the word ``cpu``)."""
    if _FROM_CLI.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is None else f"{flag} {value}"
    return f"{name}=" if value is None else f"{name}={value if literal is None else literal}"


# -- model references -----------------------------------------------------------------------------
class ModelRefError(HubtuneError, ValueError):
    """A model reference does not follow ``[source:]id[@revision]``."""

    exit_code = 2


class UnknownSourceError(ModelRefError, LookupError):
    """The reference names a source no installed plugin provides."""


class AmbiguousModelError(ModelRefError):
    """A bare name is claimed by more than one source; hubtune refuses to guess."""

    def __init__(self, name: str, candidates: list[str]):
        self.name = name
        self.candidates = candidates
        super().__init__(
            f"model name {name!r} is offered by {len(candidates)} sources; "
            f"choose one of: {', '.join(candidates)}"
        )


class ModelNotFoundError(HubtuneError, LookupError):
    """No source knows the model, or the hub has no such repository or weights."""


# -- plugins --------------------------------------------------------------------------------------
class PluginError(HubtuneError):
    """A plugin is broken or two plugins collide."""


# -- backbones ------------------------------------------------------------------------------------
class BackboneOptionError(HubtuneError, ValueError):
    """A layer, pooling, precision, device or weights option the backbone cannot honour."""

    exit_code = 2


class TowerError(BackboneOptionError):
    """The model has no tower for the data's kind (a text model asked to embed images, or the reverse)."""

    def __init__(self, message: str, modality: str):
        super().__init__(message)
        self.modality = modality  # what the model does embed


class OfflineError(HubtuneError, ConnectionError):
    """Offline mode is on and the files are not in the local cache."""


class UnsafeModelError(HubtuneError, PermissionError):
    """Loading would run or unpickle code hubtune was not explicitly allowed to run."""


class InputError(HubtuneError, ValueError):
    """One input item could not be read or decoded (recorded per item, never fatal to a batch)."""


class ImageTooLarge(InputError):
    """An image of more pixels than hubtune decodes: a decompression bomb."""


# -- the embedding store --------------------------------------------------------------------------
class StoreError(HubtuneError):
    """The store is damaged, misused, or cannot be written."""


class DatasetNameError(StoreError, ValueError):
    """A dataset name that cannot be a key of the store and part of an index file name."""

    exit_code = 2


class FingerprintLookupError(HubtuneError, LookupError):
    """No fingerprint, or more than one, fits the model and options given."""

    exit_code = 2


# -- indexes and search ---------------------------------------------------------------------------
class IndexOptionError(HubtuneError, ValueError):
    """An index option or file hubtune cannot use."""

    exit_code = 2


class QueryError(HubtuneError, ValueError):
    """A search query that names no item, file or text hubtune can embed."""

    exit_code = 2


# -- scale-out: shards and engines ----------------------------------------------------------------
class ShardError(HubtuneError):
    """A shards folder is missing pieces, is damaged, or belongs to another plan."""


class LaunchError(HubtuneError, RuntimeError):
    """``--engine torchrun`` outside a torchrun (or Slurm) launch."""

    exit_code = 2


class RayMissingError(HubtuneError, ImportError):
    """``--engine ray`` without Ray installed."""

    exit_code = 2


# -- datasets and extraction ----------------------------------------------------------------------
class DatasetError(HubtuneError, ValueError):
    """The data given to a command is not a dataset hubtune can read."""

    exit_code = 2


class TooManyFailures(HubtuneError):
    """More items failed than ``--max-failures`` allows (everything readable was still stored);
    ``summary`` is the run's :class:`ExtractSummary`, for the report a caller still owes (None where
    the caller has reported it already, as the sharded engines' CLI does)."""

    def __init__(self, message: str, summary: Any = None):
        super().__init__(message)
        self.summary = summary


# -- heads and fine-tuning ------------------------------------------------------------------------
class HeadError(HubtuneError, ValueError):
    """A head option, label set or saved head hubtune cannot use."""

    exit_code = 2


class ActivationCacheError(HubtuneError, ValueError):
    """The split-point activations would not fit the cache budget."""

    exit_code = 2


class CompareError(HubtuneError):
    """Every model given to ``compare`` failed (each row says why)."""


class PlotError(HubtuneError, ValueError):
    """A plot file hubtune cannot write (its folder cannot be made or written, a format matplotlib does not
    write), or nothing to draw (every model failed)."""

    exit_code = 2


# -- the HTTP service (hubtune serve; hubtune.serve.statuses maps each class to its HTTP status) -----------
class ServeError(HubtuneError):
    """``hubtune serve`` cannot start as asked: a head made for another backbone, a token variable that is
    not set, the ``serve`` extra not installed."""

    exit_code = 2


class RequestError(HubtuneError, ValueError):
    """A request the service refuses: malformed JSON, a wrong type, a missing or unknown field."""


class MalformedRequest(RequestError):
    """A body that is not the JSON (or multipart form) it says it is."""


class PayloadTooLarge(RequestError):
    """Too many inputs, too long a text, too big a body, or an image with too many pixels."""


class UnsupportedInput(RequestError):
    """An upload that is not an image, or an input of a kind the model does not embed."""


class NotFoundError(RequestError, LookupError):
    """A dataset, an item row or a head the service does not hold."""


class AuthError(HubtuneError, PermissionError):
    """No bearer token, or a wrong one, on a route that needs it."""


class Overloaded(HubtuneError, RuntimeError):
    """The request queue is full, or the model is not loaded yet: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ServeTimeout(HubtuneError, TimeoutError):
    """A request waited longer than the service's request timeout."""
