"""Inference: translate a CT volume into a synthetic PET volume with G and F.

Names are loaded on first use (PEP 562), so ``from RegC2PLib.inference import
TranslationOptions`` stays torch-free for the command line and the Slicer panel.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "TranslationOptions": ".options",
    "translate_volume": ".translate",
    "WindowPlan": ".windows",
    "refine_windows": ".windows",
    "available_devices": ".device",
    "resolve_device": ".device",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
