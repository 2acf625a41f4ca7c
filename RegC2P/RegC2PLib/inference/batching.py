"""Slices per generator pass: the user's number, or the fastest one measured on this machine.

Which batch is fastest depends on the processor, not on a rule: on a 2-core AVX-512 CPU
the ``paper`` generator runs a slice in 0.62 s at batch 1 and 0.78 s at batch 8 (eight
slices of 256-channel activations no longer fit the caches), while a GPU wants large
batches. So on a CPU, unless ``batch_size`` is given, :class:`BatchSizer` hands out each
of :data:`CPU_CANDIDATES` twice over the first slices of a volume (their outputs are kept;
the first pass of a new shape pays oneDNN's setup, so the second round is the one timed)
and then stays with the size that took the least time per slice. The choice is remembered
for the process (per device, model grid, generator, precision and thread count), so
evaluating many studies measures once. On GPUs the batch is :data:`GPU_BATCH`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from ..memory import available_bytes

CPU_CANDIDATES = (1, 2, 4, 8)
GPU_BATCH = 16
_ROUNDS = 2  # passes per candidate; only the last is timed
_CHOSEN: dict[Hashable, int] = {}


class BatchSizer:
    """The batch size of each next generator pass: fixed, or chosen by timing (CPU)."""

    def __init__(self, fixed: int | None, device: torch.device, key: Hashable, largest: int | None = None) -> None:
        """``fixed``: the user's batch size (None: choose); ``key``: what the choice depends on
        besides the device; ``largest``: the largest batch the memory allows (None: no limit)."""
        largest = largest or max(GPU_BATCH, *CPU_CANDIDATES)
        self._key = (device.type, torch.get_num_threads(), key)
        self._trials: list[int] = []
        self._seconds: dict[int, float] = {}
        if fixed is not None:
            self._size = fixed
        elif device.type != "cpu":
            self._size = min(GPU_BATCH, largest)
        elif self._key in _CHOSEN:
            self._size = min(_CHOSEN[self._key], largest)
        else:
            candidates = [b for b in CPU_CANDIDATES if b <= largest] or [1]
            self._trials = [b for b in candidates for _ in range(_ROUNDS)]
            self._size = candidates[0]

    @property
    def measuring(self) -> bool:
        return bool(self._trials)

    def next_size(self) -> int:
        """Slices for the next pass."""
        return self._trials[0] if self._trials else self._size

    def record(self, slices: int, seconds: float) -> None:
        """Report that the pass just run took ``seconds`` for ``slices`` slices."""
        if not self._trials:
            return
        planned = self._trials.pop(0)
        if slices == planned:  # a short last pass says nothing about its size
            self._seconds[planned] = seconds / slices  # later rounds overwrite: the warm one counts
        if not self._trials and self._seconds:
            self._size = min(self._seconds, key=lambda b: (self._seconds[b], b))
            _CHOSEN[self._key] = self._size

    @property
    def size(self) -> int:
        """The batch size in use (after measuring: the fastest)."""
        return self._size

    @property
    def seconds_per_slice(self) -> dict[int, float]:
        """What was measured: seconds per slice for each candidate (empty if nothing was)."""
        return dict(self._seconds)


def largest_batch(fixed: int | None, device: torch.device, needed: Callable[[int], float]) -> int:
    """The largest batch the sizer may use: ``fixed`` when given, else the largest candidate for
    ``device`` whose ``needed(batch)`` bytes fit in the available memory (the smallest if none
    does: the caller's memory check then refuses the job)."""
    if fixed is not None:
        return fixed
    candidates = CPU_CANDIDATES if device.type == "cpu" else (1, GPU_BATCH)
    available = available_bytes() if device.type == "cpu" else None
    fitting = [b for b in candidates if available is None or needed(b) <= available]
    return max(fitting, default=candidates[0])


def forget_choices() -> None:
    """Forget the remembered batch sizes (tests; a machine whose load changed)."""
    _CHOSEN.clear()
