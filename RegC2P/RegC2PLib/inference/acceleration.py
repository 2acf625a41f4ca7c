"""Inference precision: float32 (default) or bfloat16 autocast (opt-in).

An optimisation is on by default only if it is faster *and* keeps the synthetic PET
within :data:`TOLERANCE_MAE_PAPER` paper MAE units (1/32767 of the PET range; the paper's
smallest reported gap, overlap vs non-overlap refinement, is 3.66) and
:data:`TOLERANCE_MAX_SUV` SUV per voxel of float32 (``benchmarks/speed.py`` measures this,
``benchmarks/speed_report.py`` decides from it; docs/benchmark-speed.md has the numbers).
Batched refiner windows meet it (identical to 1e-6). bfloat16 does not: on a phantom
(untrained weights) it moved the output by about 100 paper MAE units and 0.5 SUV at most
(about 5 units from the refiner alone), for a 1.9-2.3× faster G on an AVX-512 BF16 CPU,
so it is only an opt-in for quick previews. On a CPU without native bfloat16 (no
AVX512-BF16 or AMX, e.g. an AVX2-only processor) PyTorch emulates it through a slow
non-oneDNN path: the ``small`` G took 2.3 s per slice instead of 0.035 s in float32 (about
65× slower), so ``bfloat16`` is refused there with a one-line error.
Under ``bfloat16`` convolutions run in bfloat16 through
:func:`torch.autocast` (weights stay float32, outputs are returned as float32).
"""

from __future__ import annotations

import contextlib

import torch

from ..choices import PRECISIONS
from ..errors import InputError

# What an optimisation may change, at most, to be used by default (vs float32).
TOLERANCE_MAE_PAPER = 1.0
TOLERANCE_MAX_SUV = 0.1


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has hardware bfloat16 arithmetic (not emulated through float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` (``float32`` or ``bfloat16``) on ``device``."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and device.type == "mps":
        raise InputError("bfloat16 is not supported on Apple MPS here; use --precision float32")
    if precision == "bfloat16" and device.type == "cpu" and not native_bfloat16(device):
        raise InputError(
            "this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where bfloat16 runs tens of times "
            "slower than float32; use --precision float32"
        )
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def compute_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Context in which inference runs in ``dtype``: autocast for bfloat16, nothing for float32.

    channels_last is not used: in the benchmark it gave no consistent gain in either precision.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
