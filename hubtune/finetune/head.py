"""The head on top of the trained blocks: the fitted linear probe (LP-FT) or a user-sized MLP.

LP-FT (Kumar et al. 2022): fine-tuning starts from the linear probe fitted on the frozen features,
so the first steps do not wreck the pretrained features with gradients from a random head. The
probe is :mod:`hubtune.heads.linear` (C chosen on validation) on standardised features; the
standardisation is folded into the layer, so the head is one plain ``nn.Linear`` whose logits at
step 0 are the probe's. Heads are built by :func:`hubtune.finetune.standalone.build_head`, the one
definition the plain-torch loader shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from hubtune.heads.linear import LinearModel


def fold_standardisation(layer: "torch.nn.Linear", mean: np.ndarray, std: np.ndarray) -> None:
    """Make ``layer(x)`` compute ``layer((x - mean) / std)``: ``W' = W / std``, ``b' = b - W' mean``."""
    import torch

    with torch.no_grad():
        scale = torch.as_tensor(1.0 / std, dtype=torch.float64)
        weight = layer.weight.double() * scale  # (out, in)
        layer.bias.copy_(layer.bias.double() - weight @ torch.as_tensor(mean, dtype=torch.float64))
        layer.weight.copy_(weight)


def fit_probe(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray,
              classes: int) -> tuple["LinearModel", Any]:
    """The linear probe on frozen features: standardise, choose C on validation, fit on train."""
    from hubtune.heads import linear
    from hubtune.heads.features import Normaliser

    norm = Normaliser.fit("standardise", z_train)
    xt, xv = norm(z_train), norm(z_val)
    C, _ = linear.select_c(xt, y_train, xv, y_val, classes)
    return linear.fit(xt, y_train, classes, C), norm


def probe_layer(model: "LinearModel", norm: Any) -> "torch.nn.Linear":
    """The fitted probe as one ``nn.Linear`` on raw features (standardisation folded in)."""
    import torch
    import torch.nn as nn

    weight = model.weight  # (d, k) float64
    layer = nn.Linear(*weight.shape)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight.T))
        layer.bias.copy_(torch.as_tensor(model.bias))
    fold_standardisation(layer, norm.mean, norm.std)
    return layer


def initial_head(spec: dict[str, Any], z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray,
                 y_val: np.ndarray, classes: int, seed: int) -> tuple["torch.nn.Module", dict[str, Any]]:
    """The head fine-tuning starts from, and what it was (probe C and validation accuracy)."""
    import torch

    model, norm = fit_probe(z_train, y_train, z_val, y_val, classes)
    probe_accuracy = float((model.probabilities(norm(z_val)).argmax(1) == y_val).mean()) if len(y_val) else None
    info = {"probe_C": model.C, "probe_val_accuracy": probe_accuracy}
    if spec["kind"] == "linear":
        return probe_layer(model, norm), info
    from hubtune.finetune.standalone import build_head

    torch.manual_seed(seed)
    head = build_head(spec, z_train.shape[1], classes)
    fold_standardisation(head[0], norm.mean, norm.std)  # the MLP sees standardised features too
    return head, info


def parse_hidden(text: str) -> list[int]:
    """``"512,256"`` -> ``[512, 256]`` (the MLP's hidden widths)."""
    sizes: Sequence[str] = [part.strip() for part in text.split(",") if part.strip()]
    if not sizes or not all(part.isdigit() and int(part) > 0 for part in sizes):
        from hubtune.errors import HeadError

        raise HeadError(f"--hidden {text!r}: expected positive widths separated by commas, e.g. 512 or 512,256")
    return [int(part) for part in sizes]
