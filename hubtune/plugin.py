"""Everything a source plugin imports, in one place.

A plugin author writes ``from hubtune.plugin import Source, Backbone, ...`` and nothing else from
hubtune: the names here are the plugin contract (docs/plugins.md walks through it), and they keep
their meaning across releases. Importing this module is cheap (no torch, transformers or faiss).

A source *declares*: its layers and default layer (``Backbone(layers=..., default_layer=...)``), the
pools each layer accepts (``Backbone.pools``), how to set the network up for a choice
(``Backbone.configure``), its blocks for fine-tuning (``Backbone.blocks`` -> ``BlockSplit``) and how
to rebuild it without hubtune (``Backbone.export_recipe``). The core validates the user's options
against those declarations and records the canonical values.
"""

from __future__ import annotations

from hubtune.backbone import (
    RANDOM_INSTEAD,
    Backbone,
    ImagePreprocessor,
    LoadOptions,
    Preprocessor,
    Weights,
    load_weights_into,
)
from hubtune.errors import (
    BackboneOptionError,
    HubtuneError,
    InputError,
    ModelNotFoundError,
    ModelRefError,
    OfflineError,
    PluginError,
    UnsafeModelError,
)
from hubtune.blocks import BlockSplit, flatten_stages, sequential_run
from hubtune.hookspecs import hookimpl
from hubtune.textio import as_text
from hubtune.pooling import (
    FEATURE_MAP,
    NATIVE,
    POOLED,
    TEXT_TOKENS,
    TOKENS,
    LayerPools,
    pool_any,
    pool_map,
    pool_tokens,
    pools_for_rank,
)
from hubtune.refs import ModelRef
from hubtune.sources import ModelInfo, PullResult, Source

__all__ = [
    "FEATURE_MAP",
    "as_text",
    "NATIVE",
    "POOLED",
    "RANDOM_INSTEAD",
    "TEXT_TOKENS",
    "TOKENS",
    "Backbone",
    "BackboneOptionError",
    "BlockSplit",
    "HubtuneError",
    "ImagePreprocessor",
    "InputError",
    "LayerPools",
    "LoadOptions",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelRef",
    "ModelRefError",
    "OfflineError",
    "PluginError",
    "Preprocessor",
    "PullResult",
    "Source",
    "UnsafeModelError",
    "Weights",
    "flatten_stages",
    "hookimpl",
    "load_weights_into",
    "pool_any",
    "pool_map",
    "pool_tokens",
    "pools_for_rank",
    "sequential_run",
]
