"""What a source plugin implements: one class, one required method (``load``).

Batching, caching, validation and the CLI live in the core; a source only knows how to turn a
model reference into a :class:`hubtune.backbone.Backbone`, and optionally how to list, claim and
pull models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterable

if TYPE_CHECKING:
    from hubtune.backbone import Backbone, LoadOptions
    from hubtune.refs import ModelRef


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``hubtune models``."""

    ref: str
    source: str
    modality: str


@dataclass(frozen=True)
class PullResult:
    """What ``hubtune pull`` reports: the resolved revision and where the files are."""

    ref: str
    revision: str | None  # None: nothing to resolve (random weights of a built-in architecture)
    path: str | None


class Source:
    """Base class of a model source. Subclass it, set ``name``, implement :meth:`load`."""

    name: ClassVar[str] = ""
    #: The modalities this source can serve, for listings.
    modalities: ClassVar[tuple[str, ...]] = ("image",)

    def load(self, ref: "ModelRef", options: "LoadOptions") -> "Backbone":
        """Build the backbone for ``ref`` (its ``source`` is this one) with ``options``."""
        raise NotImplementedError(f"source {self.name!r} does not implement load()")

    def claims(self, name: str) -> bool:
        """Whether a bare name (no ``source:`` prefix) is a model of this source."""
        return False

    def list_models(self, pattern: str | None = None) -> Iterable[ModelInfo]:
        """Models this source offers, filtered by a shell-style ``pattern``."""
        return []

    def modality(self, ref: "ModelRef") -> str | None:
        """What ``ref`` embeds (``image``, ``text``, or ``image+text`` for a two-tower model) when the source
        can tell without loading it: no weights read, no network. ``None`` (the default): only loading tells.
        ``compare`` asks it to refuse a model of the wrong kind for the data before loading it."""
        return None

    def pull(self, ref: "ModelRef", options: "LoadOptions") -> PullResult:
        """Fetch the weights into the local cache (or, offline, confirm they are there).

        The default loads the backbone, which fetches whatever it needs; sources that keep files
        in a cache override this to avoid building the model.
        """
        backbone = self.load(ref, options)
        return PullResult(ref=str(backbone.ref), revision=backbone.revision, path=None)
