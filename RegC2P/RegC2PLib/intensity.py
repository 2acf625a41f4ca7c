"""Intensity maps between physical units (HU, SUV) and the network scale [-1, 1].

All functions work on numpy arrays and torch tensors alike and never modify their input.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from .config import IntensityConfig

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _clip(x: Array, low: float, high: float) -> Array:
    return x.clamp(low, high) if isinstance(x, torch.Tensor) else np.clip(x, low, high)


def ct_to_network(hu: Array, cfg: IntensityConfig) -> Array:
    """CT in HU -> [-1, 1] (clipped to the configured HU range)."""
    scaled = (hu - cfg.ct_hu_min) * (2.0 / (cfg.ct_hu_max - cfg.ct_hu_min)) - 1.0
    return _clip(scaled, -1.0, 1.0)


def network_to_ct(x: Array, cfg: IntensityConfig) -> Array:
    """[-1, 1] -> CT in HU."""
    return (x + 1.0) * ((cfg.ct_hu_max - cfg.ct_hu_min) / 2.0) + cfg.ct_hu_min


def pet_to_network(suv: Array, cfg: IntensityConfig) -> Array:
    """PET in SUV -> [-1, 1] (clipped to [0, pet_suv_max])."""
    return _clip(suv * (2.0 / cfg.pet_suv_max) - 1.0, -1.0, 1.0)


def network_to_pet(x: Array, cfg: IntensityConfig) -> Array:
    """[-1, 1] -> PET in SUV (values below 0 SUV clipped to 0)."""
    suv = (x + 1.0) * (cfg.pet_suv_max / 2.0)
    return _clip(suv, 0.0, cfg.pet_suv_max)


def network_to_paper_scale(x: Array) -> Array:
    """[-1, 1] -> [0, 1], the scale of the paper's metrics (stored PET / 32767)."""
    return (x + 1.0) * 0.5
