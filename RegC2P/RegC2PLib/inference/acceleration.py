"""Inference precision and memory layout.

``precision``: ``float32``; ``bfloat16`` (convolutions in bfloat16 through
:func:`torch.autocast`, weights stay float32, results are float32); or ``auto`` (the
default): bfloat16 where the device has native bfloat16 arithmetic *and* this model file's
precision record (:mod:`.precision_record`), measured on the same kind of device, says
bfloat16 kept its PET within the tolerance of float32 on real and phantom studies; float32
everywhere else. On a CPU without native
bfloat16 (no AVX512-BF16 or AMX, e.g. an AVX2-only processor) PyTorch emulates it through
a slow non-oneDNN path (the ``small`` G took 2.3 s per slice instead of 0.035 s in
float32), so ``bfloat16`` is refused there with a one-line error.

Layout: on CPUs the networks and their inputs are channels_last (NHWC / NDHWC), which
oneDNN's convolutions run without reordering; with the networks' channels_last-friendly
instance norm (:class:`~RegC2PLib.networks.blocks.InstanceNorm`) G ran 1.0-1.1× as fast in
float32 as in the contiguous layout on an AVX-512/AMX CPU (docs/benchmark-speed.md), and
bfloat16 only reaches its speed in this layout. GPUs keep the contiguous layout (not measured).
"""

from __future__ import annotations

import contextlib

import torch

from ..choices import PRECISIONS
from ..errors import InputError
from ..model_file import LoadedModel
from .precision_record import bfloat16_adopted


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` has hardware bfloat16 arithmetic (not emulated through float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    return False


def resolve_precision(precision: str, device: torch.device, model: LoadedModel | None = None) -> torch.dtype:
    """The compute dtype for ``precision`` (``auto``, ``float32`` or ``bfloat16``) on ``device``;
    ``auto`` asks ``model``'s precision record (float32 without a model)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        adopted = model is not None and native_bfloat16(device) and bfloat16_adopted(model, device)
        return torch.bfloat16 if adopted else torch.float32
    if precision == "bfloat16" and device.type == "mps":
        raise InputError("bfloat16 is not supported on Apple MPS here; use --precision float32")
    if precision == "bfloat16" and device.type == "cpu" and not native_bfloat16(device):
        raise InputError(
            "this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where bfloat16 runs tens of times "
            "slower than float32; use --precision float32"
        )
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def compute_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Context in which inference runs in ``dtype``: autocast for bfloat16, nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def layouts(device: torch.device) -> tuple[torch.memory_format, torch.memory_format]:
    """Memory formats of 2D (G) and 3D (F) activations and weights on ``device``."""
    if device.type == "cpu":
        return torch.channels_last, torch.channels_last_3d
    return torch.contiguous_format, torch.contiguous_format


def place(model: LoadedModel, device: torch.device) -> tuple[torch.memory_format, torch.memory_format]:
    """Move ``model`` to ``device`` in that device's layout (in place, values unchanged); the layouts."""
    flat, volume = layouts(device)
    model.to(device)
    model.generator.to(memory_format=flat)
    if model.refiner is not None:
        model.refiner.to(memory_format=volume)
    return flat, volume
