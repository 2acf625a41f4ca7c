"""One run over several processes: PyTorch's own distributed engine (``torchrun`` + DDP).

``torchrun`` (or ``regc2p train --processes N``, which runs it) starts one process per
GPU (per CPU share on a CPU-only machine) and gives each ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and a rendezvous; :func:`from_environment` joins them. Without those
variables everything here is the one-process case at no cost.

Two process groups:

* the **control** group (gloo, CPU objects) carries Python objects and small messages:
  rank 0's results and errors (:meth:`Distributed.on_main`, :meth:`Distributed.main_first`),
  the per-step losses and stop flags, validation scores, RNG states for checkpoints. Its
  timeout is long (:data:`CONTROL_TIMEOUT`): the other ranks wait on it while rank 0
  builds the data cache, which takes hours for thousands of studies. A rank that dies
  closes its connections, so the others fail at once instead of waiting (and torchrun
  ends them anyway);
* the **gradient** group (NCCL on CUDA, gloo on the CPU) that
  :class:`~torch.nn.parallel.DistributedDataParallel` all-reduces gradients in, with
  PyTorch's default timeout.

Every rank runs the same steps in lockstep and takes every decision (validate,
checkpoint, stop) from values all ranks share, so no rank waits in a collective the
others never reach.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError, RegC2PError, one_line

T = TypeVar("T")
CONTROL_TIMEOUT = datetime.timedelta(hours=24)
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class PeerError(RegC2PError):
    """Rank 0 failed (and reports the error itself); the other ranks stop with this."""


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def elastic_restart() -> int:
    """How often torchrun's agent has restarted this job's workers (0: the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


class Distributed:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node).

    The one-process instance (:data:`SINGLE`) does no communication at all.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._gradients: Any = None  # the DDP process group, made with the device (:meth:`device`)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and reports."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's device for the run's ``device`` (``cuda:LOCAL_RANK`` on CUDA), and
        the gradient process group on it. Apple MPS cannot take part in a distributed job."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            count = torch.cuda.device_count()
            if self.local_rank >= count:
                raise InputError(
                    f"process {self.local_rank} on this node has no GPU of its own ({count} found); "
                    f"start at most {count} processes per node (--nproc_per_node / --processes)"
                )
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            self._gradients = dist.new_group(backend="nccl")
        elif device.type == "cpu":
            self._gradients = dist.new_group(backend="gloo")
        else:
            raise InputError(f"several processes need CUDA or the CPU, not {device.type}; use --device cuda or cpu")
        return device

    # ----------------------------------------------------------------- networks

    def wrap(self, module: nn.Module, device: torch.device, trained: bool, compile: bool) -> nn.Module:
        """What a task calls ``module`` through: DDP for a ``trained`` module in a
        distributed job (gradients averaged over ranks in the backward pass), then
        ``torch.compile`` when asked. The module itself (its weights, its checkpoint
        names) stays as it is."""
        if trained and self.enabled:
            if self._gradients is None:
                raise RuntimeError("Distributed.device() must run before modules are wrapped")
            module = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[device.index] if device.type == "cuda" else None,
                process_group=self._gradients,
                gradient_as_bucket_view=True,
            )
        return torch.compile(module) if compile else module  # type: ignore[return-value]

    # ----------------------------------------------------------------- control messages

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and hand its result to every rank. An exception on
        rank 0 is raised there; the other ranks raise :class:`PeerError`."""
        if not self.enabled:
            return fn()
        outcome: tuple[bool, Any] = (False, None)
        failure: BaseException | None = None
        if self.is_main:
            try:
                outcome = (True, fn())
            except Exception as exc:
                failure, outcome = exc, (False, one_line(exc))
        ok, value = self.broadcast(outcome)
        if failure is not None:
            raise failure
        if not ok:
            raise PeerError(f"rank 0 failed: {value}")
        return value

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then (after it succeeded) on the other ranks; each rank
        returns its own result. For work whose first run leaves files the others then
        read, such as the data cache."""
        if not self.enabled:
            return fn()
        result = self.on_main(fn)
        return result if self.is_main else fn()

    def mean_and_any(self, values: dict[str, float], flag: bool) -> tuple[dict[str, float], bool]:
        """The mean of each of ``values`` over the ranks and whether any rank's ``flag`` is set."""
        if not self.enabled:
            return values, flag
        keys = sorted(values)
        summed = torch.tensor([*(values[k] for k in keys), float(flag)], dtype=torch.float64)
        dist.all_reduce(summed)
        return {k: float(summed[i]) / self.world_size for i, k in enumerate(keys)}, bool(summed[-1] > 0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Distributed()


def end_with_parent() -> None:
    """Have the kernel kill this process when its parent process dies (Linux).

    torchrun starts each worker in a session of its own, so signals to the launcher's
    process group do not reach the workers: if torchrun's agent itself were killed
    outright (SIGKILL, the out-of-memory killer) they would go on training with nobody
    to stop them. Python has no binding for ``prctl(PR_SET_PDEATHSIG)``, hence ctypes.
    Checkpoints are written atomically, so being killed at any moment is safe.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL)) != 0:
        return  # not permitted here (a sandbox); the launcher's own shutdown still ends us
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def from_environment() -> Distributed:
    """Join the job torchrun started (its variables in the environment), else :data:`SINGLE`."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        end_with_parent()
    if not all(name in os.environ for name in LAUNCH_VARIABLES) or int(os.environ["WORLD_SIZE"]) < 2:
        return SINGLE
    store, rank, world_size = next(dist.rendezvous("env://", timeout=CONTROL_TIMEOUT))
    # torchrun's agent keeps its key-value store when it restarts the workers: keys of
    # their own per attempt, or a restarted rank may read a dead rank's address.
    store = dist.PrefixStore(f"regc2p/attempt_{elastic_restart()}", store)
    dist.init_process_group(backend="gloo", store=store, rank=rank, world_size=world_size, timeout=CONTROL_TIMEOUT)
    return Distributed(rank, world_size, int(os.environ["LOCAL_RANK"]))


def per_rank_batch(global_batch: int, world_size: int, flag: str) -> int:
    """Samples each rank takes per step: the global batch ``global_batch`` split evenly."""
    if global_batch % world_size:
        raise InputError(
            f"{flag} {global_batch} does not split evenly over {world_size} processes: it is the batch of all "
            f"processes together; use a multiple of {world_size}"
        )
    return global_batch // world_size
