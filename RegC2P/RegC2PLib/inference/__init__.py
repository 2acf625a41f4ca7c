"""Inference: translate a CT volume into a synthetic PET volume with G and F."""

from .device import available_devices, resolve_device
from .translate import TranslationOptions, translate_volume
from .windows import WindowPlan, refine_windows

__all__ = [
    "TranslationOptions",
    "WindowPlan",
    "available_devices",
    "refine_windows",
    "resolve_device",
    "translate_volume",
]
