"""Which samples each epoch of a stage holds, as a pure function of (seed, stage, epoch).

A run's samples come from one or more dataset folders (sources), concatenated. An epoch
has as many samples as all sources together; each source fills its weight's share of it,
walking through its own samples in a seeded random order that carries on from epoch to
epoch, so a source drawn less than its size is still seen whole over several epochs, and
one drawn more is repeated evenly. Optionally the samples that show a lesion are then
repeated until they are a given share of the epoch (nnU-Net's foreground oversampling).
The epoch's list is finally shuffled. Being a function of its arguments, an epoch is the
same after a resume, which is what makes a killed-and-resumed run bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def mix(seed: int, stage: str, epoch: int) -> int:
    """A stable seed for (seed, stage, epoch) (Python's ``hash`` of a str is salted per process)."""
    return (seed * 1_000_003 + sum(map(ord, stage)) * 10_007 + epoch) % (2**63 - 1)


def oversample_lesions(n: int, lesion: np.ndarray, fraction: float) -> np.ndarray:
    """Every one of ``n`` samples once, then the ``lesion`` samples again, in turn, until they
    make up ``fraction`` of the list."""
    extra = math.ceil((fraction * n - len(lesion)) / (1.0 - fraction)) if len(lesion) else 0
    return np.concatenate([np.arange(n), np.resize(lesion, max(extra, 0))]).astype(np.int64)


class EpochSampler:
    """The sample indices of each epoch (see the module docstring).

    ``sizes``/``weights``: samples and relative weight of each source, in the order they
    are concatenated; ``lesion``: indices (into the concatenation) of samples showing a
    lesion, repeated to ``lesion_fraction`` of each epoch.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float],
        seed: int,
        stage: str,
        lesion: np.ndarray | None = None,
        lesion_fraction: float = 0.0,
    ) -> None:
        if len(sizes) != len(weights) or not sizes or min(sizes) < 1:
            raise ValueError(f"every source needs samples and a weight (sizes {list(sizes)}, weights {list(weights)})")
        self.sizes, self.seed, self.stage = [int(n) for n in sizes], int(seed), stage
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        total = sum(self.sizes)
        shares = np.asarray(weights, float) / float(np.sum(weights))
        self.quotas = [max(1, round(total * s)) for s in shares]
        self.lesion = np.asarray(lesion if lesion is not None else [], np.int64)
        self.lesion_fraction = float(lesion_fraction)
        self.length = len(self._base(0)) if self.lesion_fraction else sum(self.quotas)

    def indices(self, epoch: int) -> list[int]:
        """The shuffled sample indices of ``epoch``."""
        base = self._base(epoch)
        generator = torch.Generator().manual_seed(mix(self.seed, self.stage, epoch))
        return base[torch.randperm(len(base), generator=generator).numpy()].tolist()

    def _base(self, epoch: int) -> np.ndarray:
        parts = [
            offset + self._stream(i, epoch * quota, quota) for i, (offset, quota) in enumerate(zip(self.offsets, self.quotas))
        ]
        base = np.concatenate(parts)
        if self.lesion_fraction:
            extra = oversample_lesions(len(base), self.lesion, self.lesion_fraction)[len(base) :]
            base = np.concatenate([base, extra])
        return base

    def _stream(self, source: int, start: int, count: int) -> np.ndarray:
        """``count`` samples of ``source`` from position ``start`` of its endless sequence of
        seeded permutations (all of them, in order, when the source fills its own share)."""
        n = self.sizes[source]
        if count == n and start % n == 0:
            return np.arange(n, dtype=np.int64)
        first, last = start // n, (start + count - 1) // n
        rounds = [
            np.random.default_rng([self.seed, source, sum(map(ord, self.stage)), r]).permutation(n)
            for r in range(first, last + 1)
        ]
        return np.concatenate(rounds)[start - first * n : start - first * n + count].astype(np.int64)
