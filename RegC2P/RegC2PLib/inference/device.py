"""Choosing the compute device: ``auto``, ``cpu``, ``cuda`` or ``mps``."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from ..choices import DEVICE_CHOICES
from ..errors import DeviceError


def available_devices() -> dict[str, str | None]:
    """Map ``cpu``/``cuda``/``mps`` to ``None`` when usable, else a one-line reason."""
    reasons: dict[str, str | None] = {"cpu": None}
    if torch.cuda.is_available():
        reasons["cuda"] = None
    elif torch.version.cuda is None:
        reasons["cuda"] = f"this torch build ({torch.__version__}) has no CUDA support"
    else:
        reasons["cuda"] = "torch has CUDA support but finds no usable NVIDIA GPU/driver"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        reasons["mps"] = None
    elif mps is not None and mps.is_built():
        reasons["mps"] = "this Mac has no usable Metal (MPS) device"
    else:
        reasons["mps"] = "Apple Metal (MPS) needs torch on an Apple-silicon Mac"
    return reasons


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a named device that is missing is an error."""
    reasons = available_devices()
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if reasons[d] is None))
    if name not in reasons:
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if reasons[name] is not None:
        raise DeviceError(f"device {name!r} is not available: {reasons[name]}; use --device auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The processor behind ``device``: the CPU's model name (Linux: /proc/cpuinfo) or the GPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        return platform.processor() or platform.machine() or "unknown CPU"
    return device.type
