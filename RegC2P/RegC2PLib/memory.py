"""Memory a job needs, estimated from its shapes before anything is allocated.

A job that cannot fit is refused with one line giving the estimate and the memory
available, instead of growing until the operating system kills it. Network
activations are counted on the meta device (shapes only, nothing allocated) and scaled
by factors measured on this project's networks with ``ru_maxrss`` (float32, CPU;
``docs/reliability.md``): inference peaks at about 3.5-4.2x G's largest activation and
0.56-0.66x the sum of F's; a stage-1 training step at 0.9-1.2x the sum of G's, R's and
twice D's activations. PyTorch is imported only by the estimates that build networks, so
:func:`require_memory` also serves torch-free code (the phantom generator runs inside Slicer).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ResourceError

if TYPE_CHECKING:
    from torch import nn

    from .config import GeneratorConfig, ModelConfig, RefinerConfig
    from .training.config import TrainConfig

GIB = 2**30
FLOAT32 = 4
# Measured factors (see the module docstring), rounded up.
G_INFERENCE_PER_LARGEST = 4.5
F_INFERENCE_PER_SUM = 0.75
TRAINING_PER_SUM = 1.3


def available_bytes() -> int | None:
    """Memory this process can still allocate, or None when the system does not say.

    Linux: ``MemAvailable`` capped by the cgroup's limit minus its usage (containers);
    Windows: ``ullAvailPhys``; other systems: free physical pages.
    """
    if sys.platform.startswith("linux"):
        free = _meminfo_available()
        limit = _cgroup_room()
        return min(v for v in (free, limit) if v is not None) if free is not None or limit is not None else None
    if os.name == "nt":
        return _windows_available()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's cgroup (v2, then v1), when a limit is set."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # no limit ("max", or v1's huge number)
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def _windows_available() -> int | None:
    class MemoryStatus(ctypes.Structure):  # MEMORYSTATUSEX
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    try:
        ok = ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    return int(status.ullAvailPhys) if ok else None


def require_memory(needed: float, job: str, advice: str) -> None:
    """Refuse (:class:`ResourceError`) a ``job`` that needs more than the available memory;
    ``advice`` says how to make it smaller."""
    available = available_bytes()
    if available is not None and needed > available:
        raise ResourceError(
            f"{job} needs about {needed / GIB:.1f} GiB of memory, more than the {available / GIB:.1f} GiB available; {advice}"
        )


def activations(build: Callable[[], nn.Module], *shapes: Sequence[int], grad: bool = False) -> tuple[int, int]:
    """(sum, largest) bytes of the float32 outputs of every leaf module when the network
    ``build()`` runs on inputs of ``shapes`` — on the meta device: shapes only, no memory."""
    import torch

    sizes: list[int] = []
    with torch.device("meta"), torch.set_grad_enabled(grad):
        net = build()
        for module in net.modules():
            if not any(True for _ in module.children()):
                module.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
        net(*(torch.empty(tuple(shape)) for shape in shapes))
    return sum(sizes) * FLOAT32, max(sizes, default=0) * FLOAT32


def parameter_bytes(build: Callable[[], nn.Module]) -> int:
    """Bytes of the float32 parameters of ``build()``, counted on the meta device."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters()) * FLOAT32


def translation_bytes(
    config: ModelConfig,
    canvas: tuple[int, int],
    n_slices: int,
    n_voxels: int,
    batch_size: int,
    window: int | None,
    windows_per_batch: int,
) -> float:
    """Peak bytes of translating a CT of ``n_voxels`` voxels in ``n_slices`` axial slices on a
    model grid of ``canvas`` (H, W) pixels: the float32 output, the model-grid stack (three of
    them when refining: input, running sum, average) and the larger of G's and F's
    activations; ``window`` None: no refiner."""
    h, w = canvas
    stacks = n_slices * h * w * FLOAT32 * (1 if window is None else 3)
    peak = G_INFERENCE_PER_LARGEST * batch_size * _generator_largest_per_slice(config.generator, h, w)
    if window is not None:
        f_sum = _refiner_sum(config.refiner, (windows_per_batch, 1, min(window, n_slices), h, w))
        peak = max(peak, F_INFERENCE_PER_SUM * f_sum)
    return n_voxels * FLOAT32 + stacks + peak


# Tracing a network on the meta device takes about 0.1 s; a translation asks for several
# batch sizes on one grid, and evaluations for many volumes on few grids, so the figures are cached.
@functools.lru_cache(maxsize=64)
def _generator_largest_per_slice(config: GeneratorConfig, h: int, w: int) -> int:
    """Bytes of G's largest float32 activation for one (1, 1, h, w) slice; every activation
    has the batch as its first dimension, so a batch of b slices needs b times this."""
    from .networks import Generator

    return activations(lambda: Generator(config), (1, 1, h, w))[1]


@functools.lru_cache(maxsize=64)
def _refiner_sum(config: RefinerConfig, shape: tuple[int, ...]) -> int:
    """Bytes of all of F's float32 activations for windows of ``shape`` (N, 1, s, H, W)."""
    from .networks import Refiner

    return activations(lambda: Refiner(config), shape)[0]


def training_bytes(model: ModelConfig, train: TrainConfig) -> float:
    """Peak bytes of a training step of the stages ``train`` runs: activations kept for the
    backward pass, plus weights, gradients and Adam's two moments (4x the parameters)."""
    from .networks import Discriminator, Generator, Refiner, RegistrationNet

    m, b = model.image_size, train.batch_size
    image = (b, 1, m, m)
    # (network, its inputs, copies of its activations kept: D runs on the fake and the real PET)
    networks = [(lambda: Generator(model.generator), (image,), 1), (lambda: Discriminator(model.discriminator), (image,), 2)]
    if train.mode == "regc2p":
        networks.append((lambda: RegistrationNet(model.registration), (image, image), 1))
    stage1 = sum(
        TRAINING_PER_SUM * copies * activations(build, *inputs, grad=True)[0] + 4 * parameter_bytes(build)
        for build, inputs, copies in networks
    )
    if train.stage == "1":
        return stage1
    s, bf = model.refiner.window, train.refiner_batch_size
    frozen = 2 * G_INFERENCE_PER_LARGEST * activations(lambda: Generator(model.generator), (bf * s, 1, m, m))[1]  # G and R
    stage2 = TRAINING_PER_SUM * activations(lambda: Refiner(model.refiner), (bf, 1, s, m, m), grad=True)[0] + frozen
    return max(stage1, stage2) if train.stage == "all" else stage2
