"""Slices per generator pass: the user's number, or the fastest one measured on this machine.

Which batch is fastest depends on the processor, not on a rule: on a 2-core AVX-512 CPU
the ``paper`` generator runs a slice in 0.62 s at batch 1 and 0.78 s at batch 8 (eight
slices of 256-channel activations no longer fit the caches), while a GPU wants large
batches. So on a CPU, unless ``batch_size`` is given, :class:`BatchSizer` hands out each
of :data:`CPU_CANDIDATES` twice over the first slices of a volume (their outputs are kept;
the first pass of a new shape pays oneDNN's setup, so the second round is the one timed),
in growing order until one is clearly slower than the best so far (larger batches only get
slower from there: they no longer fit the caches), and then stays with the size that took
the least time per slice. Measurements and the
choice are kept for the process (per device, model grid, generator, precision and thread
count): evaluating many studies measures once, and a volume too short to time every
candidate leaves the rest to the next one. On GPUs the batch is :data:`GPU_BATCH`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from ..memory import available_bytes

CPU_CANDIDATES = (1, 2, 4, 8)
GPU_BATCH = 16
_ROUNDS = 2  # passes per candidate; only the last is timed
_SLOWER = 1.05  # a warm candidate this much slower per slice than the best ends the probing


@dataclass
class _Probe:
    """The measurement for one key, shared by every translation of the process: a volume too
    short to time every candidate leaves the rest to the next one."""

    trials: list[int]
    seconds: dict[int, float] = field(default_factory=dict)
    chosen: int | None = None


_PROBES: dict[Hashable, _Probe] = {}


class BatchSizer:
    """The batch size of each next generator pass: fixed, or chosen by timing (CPU)."""

    def __init__(self, fixed: int | None, device: torch.device, key: Hashable, largest: int | None = None) -> None:
        """``fixed``: the user's batch size (None: choose); ``key``: what the choice depends on
        besides the device; ``largest``: the largest batch the memory allows (None: no limit)."""
        self._largest = largest or max(GPU_BATCH, *CPU_CANDIDATES)
        self._probe: _Probe | None = None
        self._fixed = fixed if fixed is not None else min(GPU_BATCH, self._largest)  # unless a CPU measures
        if fixed is None and device.type == "cpu":
            key = (device.type, torch.get_num_threads(), key)
            self._probe = _PROBES.setdefault(key, _Probe([b for b in CPU_CANDIDATES for _ in range(_ROUNDS)]))

    @property
    def measuring(self) -> bool:
        return self._probe is not None and self._probe.chosen is None

    def next_size(self) -> int:
        """Slices for the next pass."""
        if self._probe is None:
            return self._fixed
        size = self._probe.chosen if self._probe.chosen is not None else self._probe.trials[0]
        return min(size, self._largest)

    def record(self, slices: int, seconds: float) -> None:
        """Report that the pass just run took ``seconds`` for ``slices`` slices."""
        probe = self._probe
        if probe is None or probe.chosen is not None or slices != probe.trials[0]:
            return  # a short pass (end of volume, memory limit) says nothing about the planned size
        size = probe.trials.pop(0)
        probe.seconds[size] = seconds / slices  # later rounds overwrite: the warm one counts
        best = min(probe.seconds, key=lambda b: (probe.seconds[b], b))
        # Candidates grow; once a warm one is clearly slower than the best, larger ones are not tried.
        if size not in probe.trials and probe.seconds[size] > probe.seconds[best] * _SLOWER:
            probe.trials.clear()
        if not probe.trials:
            probe.chosen = best

    @property
    def seconds_per_slice(self) -> dict[int, float]:
        """What was measured: seconds per slice for each candidate (empty if nothing was)."""
        return dict(self._probe.seconds) if self._probe is not None else {}


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
    """Forget the measurements and choices (tests; a machine whose load changed)."""
    _PROBES.clear()
