"""Each rank's share of an epoch: a ``DistributedSampler``-style split of a given sample order.

The loop decides the epoch's order (a pure function of seed, stage and epoch, possibly
weighted or oversampled) and the samples still to take; this sampler hands rank ``r`` of
``W`` the samples at positions ``r, r + W, r + 2W, ...`` of that order, as
:class:`torch.utils.data.distributed.DistributedSampler` does. With a per-rank batch of
``B / W``, the k-th batches of all ranks together hold exactly the k-th global batch of
``B`` samples of the one-process run, so the data of every step is the same whatever
the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class RankShard(Sampler[int]):
    """Rank ``rank``'s samples of ``order`` (whose length is a multiple of ``world_size``)."""

    def __init__(self, order: Sequence[int], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not within a world of {world_size}")
        if len(order) % world_size:
            raise ValueError(f"{len(order)} samples do not split evenly over {world_size} ranks")
        self.indices = list(order[rank::world_size])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
