"""A training step that runs out of GPU memory: find the largest batch that fits, say so in one line.

When a step of ``n`` samples raises :class:`torch.cuda.OutOfMemoryError`, the task gives
back its memory and smaller steps are tried, each a real training step of a fresh copy of
the task (same networks, optimisers, precision and layout, this process alone) on the
first ``b`` samples of the batch that failed, by bisection over ``1..n-1``. The answer is
conservative by what the failed task still holds (its frozen networks and, under DDP,
the gradient buckets of its wrapper), which is small next to a step's activations.
"""

from __future__ import annotations

import gc

import torch

from ..errors import InputError
from .tasks import Batch, Task

OutOfMemory = torch.cuda.OutOfMemoryError


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fits(task: Task, batch: Batch) -> bool:
    """Whether one training step of a fresh copy of ``task`` on ``batch`` fits in memory."""
    spare = task.spare()
    try:
        spare.train_step(batch)
        fits = True
    except OutOfMemory:
        fits = False
    del spare  # after the handler, so no traceback keeps the step's tensors alive
    _free(task.device)
    return fits


def largest_batch(task: Task, batch: Batch) -> int:
    """The largest number of samples below ``len(batch)`` whose training step fits (0: none)."""
    fits, fails = 0, len(batch["ct"])
    while fails - fits > 1:
        middle = (fits + fails) // 2
        if _fits(task, {key: value[:middle] for key, value in batch.items()}):
            fits = middle
        else:
            fails = middle
    return fits


def batch_too_large(task: Task, batch: Batch, flag: str) -> InputError:
    """The one-line error for a step of ``batch`` that ran out of memory, naming the batch that fits.

    ``flag`` is the option that sets the stage's (global) batch size; the task is
    unusable afterwards (its memory is given back first).
    """
    task.release()
    _free(task.device)
    world = task.dist.world_size
    failed = len(batch["ct"])
    fit = largest_batch(task, batch)
    where = f"out of memory on {task.device} in a {task.name} step of {failed} {task.unit}"
    where += " per process" if world > 1 else ""
    if fit == 0:
        return InputError(
            f"{where}, and a step of one does not fit either; use smaller networks (--preset, --image-size) "
            "or a device with more memory"
        )
    per_process = f" ({fit} per process on {world} processes)" if world > 1 else ""
    return InputError(f"{where}; the largest that fits is {fit}: start a new run folder with {flag} {fit * world}{per_process}")
