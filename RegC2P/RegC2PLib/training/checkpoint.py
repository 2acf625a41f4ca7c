"""Training checkpoints: weights, optimiser and schedule state, counters and RNG state.

Written atomically with ``torch.save``; read with ``torch.load(weights_only=True)``, so a
checkpoint can never run code. Everything inside is tensors, numbers, strings, lists
and dicts (NumPy's RNG state is stored as a tensor for that reason).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import OutputError, RegC2PError, one_line


def rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's global random generators (CUDA: the
    current device's, the one this process trains on)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s generators (CUDA: onto the current device)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors, numbers, strings, lists, dicts), read back before it replaces the last one."""
    with atomic_path(path, check=_read_back) as tmp:
        torch.save(payload, tmp)


def _read_back(path: Path) -> None:
    try:
        load_checkpoint(path)
    except RegC2PError as exc:
        raise OutputError(f"cannot write checkpoint {path.name}: it does not read back; check the free space") from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling code; a corrupt file is a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise RegC2PError(f"cannot read checkpoint {path} ({one_line(exc)}); delete it to restart that stage") from exc
