"""Sliding windows of ``s`` consecutive slices at stride ``k`` and their averaging.

Windows start at 0, k, 2k, ... and one more window ends exactly at the last slice when
the stride does not reach it, so every slice is covered at least once; a volume with
fewer than ``s`` slices is one window of all its slices (the refiner is fully
convolutional along z). Overlapping outputs are combined by an explicit per-slice weight
(uniform: the plain average the paper uses): ``out = Σ w·F(window) / Σ w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..progress import CancelToken, ProgressCallback, no_progress


@dataclass(frozen=True)
class WindowPlan:
    """Window start indices for ``n_slices`` slices, windows of ``window``, stride ``stride``."""

    n_slices: int
    window: int
    stride: int

    def __post_init__(self) -> None:
        if self.n_slices < 1 or self.window < 1 or not 1 <= self.stride <= self.window:
            raise ValueError(f"invalid window plan: {self.n_slices} slices, window {self.window}, stride {self.stride}")

    @property
    def length(self) -> int:
        """Slices per window actually used (``window``, or all slices if fewer)."""
        return min(self.window, self.n_slices)

    @property
    def starts(self) -> list[int]:
        last = self.n_slices - self.length
        starts = list(range(0, last + 1, self.stride))
        if starts[-1] != last:
            starts.append(last)
        return starts

    def coverage(self) -> np.ndarray:
        """How many windows cover each slice of the volume, shape (n_slices,); all > 0."""
        total = np.zeros(self.n_slices, dtype=np.float32)
        for start in self.starts:
            total[start : start + self.length] += 1.0
        return total


def refine_windows(
    volume: torch.Tensor,
    refiner: torch.nn.Module,
    plan: WindowPlan,
    device: torch.device,
    batch_size: int = 1,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    layout: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Apply ``refiner`` to every window of ``volume`` (z, H, W) and average the overlaps.

    Runs ``batch_size`` windows per forward pass on ``device`` in memory format ``layout``;
    accumulates on the CPU in float32, so memory is one batch of windows plus two volume-sized buffers.
    """
    if volume.shape[0] != plan.n_slices:
        raise ValueError(f"volume has {volume.shape[0]} slices, plan expects {plan.n_slices}")
    total = torch.zeros(volume.shape, dtype=torch.float32)
    starts = plan.starts
    for first in range(0, len(starts), batch_size):
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = starts[first : first + batch_size]
        windows = torch.stack([volume[s : s + plan.length] for s in batch])[:, None].to(device, memory_format=layout)
        refined = refiner(windows)[:, 0].float().cpu()
        for start, out in zip(batch, refined):
            total[start : start + plan.length] += out
        progress((first + len(batch)) / len(starts), f"refined {first + len(batch)}/{len(starts)} windows")
    return total / torch.from_numpy(plan.coverage()).view(-1, 1, 1)
