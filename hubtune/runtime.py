"""Device and precision choices, shared by extraction, benchmarks and fine-tuning."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from hubtune import constants
from hubtune.errors import BackboneOptionError, option

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), Linux only.

    Without them bf16 on the CPU is emulated and slower than fp32, so ``auto`` stays at fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str = "auto") -> "torch.device":
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise BackboneOptionError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackboneOptionError(f"device {device!r} was asked for but this machine has no CUDA device; "
                                  f"use {option('device', 'cpu', repr('cpu'))}")
    return resolved


def resolve_precision(precision: str, device: "torch.device") -> str:
    """``auto`` is bf16 where the device runs it fast (CUDA with bf16, or such a CPU), else fp32.

    ``HUBTUNE_AUTO_PRECISION`` (:func:`hubtune.constants.auto_precision`) forces what ``auto``
    resolves to, whatever the device.
    """
    import torch

    if precision not in PRECISIONS:
        raise BackboneOptionError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    forced = constants.auto_precision()
    if forced is not None:
        if forced not in PRECISIONS or forced == "auto":
            raise BackboneOptionError(
                f"HUBTUNE_AUTO_PRECISION={forced!r} is not a precision; expected fp32, bf16 or fp16 (or unset it)"
            )
        return forced
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def torch_dtype(precision: str) -> "torch.dtype":
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
