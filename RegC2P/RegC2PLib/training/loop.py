"""The one training loop both stages share: epochs, schedule, checkpoints, log, resume.

Resumable at any step: the samples of an epoch and their order are a pure function of
``(seed, stage, epoch)`` (:class:`~.sampling.EpochSampler`), so after a kill the loop reloads the last checkpoint (weights,
optimisers, schedules, counters, RNG state) and skips the batches that epoch already
used; the resumed run then takes exactly the steps an uninterrupted run takes.

Distributed (:mod:`.distributed`): every rank runs this loop in lockstep on its share of
each global batch (:class:`.sharding.RankShard`); losses and stop requests are averaged
and shared every step, validation is sharded, and only rank 0 writes the log and the
checkpoints, which hold every rank's RNG state. A resume with the same number of
processes is then exact as well; with another number each rank takes the state of
rank ``rank % saved ranks`` (the order of the data stays the same either way).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..atomic import atomic_path
from ..errors import RegC2PError, one_line
from ..progress import ProgressCallback, no_progress
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import per_rank_batch
from .memory import OutOfMemory, batch_too_large
from .run_folder import config_record, read_metrics
from .sampling import EpochSampler, mix
from .sharding import RankShard
from .tasks import Task

Validator = Callable[[Task], dict[str, float]]


class TrainingStopped(RegC2PError):
    """A stop was requested (Ctrl-C or a STOP file); the last checkpoint is kept."""


@dataclass
class Counters:
    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    best_score: float = math.inf
    validated_step: int = -1
    completed: bool = False
    seconds: float = 0.0  # wall time spent in this stage, summed over resumed sessions


class StopRequest:
    """Set by a signal handler, or by creating ``stop_file`` (how GUIs stop a run)."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.flag = False
        self.stop_file = stop_file

    def __call__(self) -> bool:
        return self.flag or (self.stop_file is not None and self.stop_file.exists())


class MetricsLog:
    """Append-only JSON-lines log (one object per training step or validation)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_after(self, stage: str, counters: Counters) -> None:
        """Drop records of ``stage`` written after the checkpoint a resume starts from."""
        if not self.path.exists():
            return

        def stale(record: dict[str, Any]) -> bool:
            last = counters.validated_step if record["kind"] == "val" else counters.step
            return record["stage"] == stage and record["step"] > last

        kept = [record for record in read_metrics(self.path) if not stale(record)]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))


def _lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    if cfg.lr_schedule == "constant":
        return lambda step: 1.0
    start = int(cfg.decay_start * total_steps)

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, 1.0 - (step - start) / max(1, total_steps - start))

    return factor


def batch_flag(stage: str) -> str:
    """The option that sets ``stage``'s batch size."""
    return "--batch-size" if stage == "stage1" else "--refiner-batch-size"


def run_stage(
    task: Task,
    dataset: Dataset,
    sampler: EpochSampler,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    log: MetricsLog,
    validate: Validator | None,
    stop: StopRequest,
    progress: ProgressCallback = no_progress,
) -> Counters:
    """Train ``task`` on the samples of ``dataset`` that ``sampler`` picks for each epoch, to
    the end of its budget in ``cfg`` (its stage's epochs and batch size, ``max_steps``),
    resuming from its last checkpoint if any.

    Writes ``<stage>_last.pt`` every ``checkpoint_every`` steps and at each epoch end,
    and ``<stage>_best.pt`` (weights only) when validation improves (lower score). The
    batch size is the global one; each of the task's ranks takes its share. Each train
    record of the log holds ``data_s``, the seconds the step waited for its batch.
    """
    dist = task.dist
    n = sampler.length
    batch_size = cfg.batch_size_of(task.name)
    local_batch = per_rank_batch(batch_size, dist.world_size, batch_flag(task.name))
    steps_per_epoch = n // batch_size
    if steps_per_epoch < 1:
        raise RegC2PError(
            f"{task.name}: {n} training samples are fewer than one batch of {batch_size}; add data or lower the batch size"
        )
    total = cfg.epochs_of(task.name) * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg, total)) for k, opt in task.optimizers.items()}
    last_path = checkpoint_dir / f"{task.name}_last.pt"
    counters = Counters()
    if last_path.exists():
        counters = _restore(load_checkpoint(last_path), task, schedulers)
    if dist.is_main:
        log.truncate_after(task.name, counters)  # records written after the state we start from
    if counters.completed and counters.step >= total:
        return counters
    counters.completed = False  # a resumed run given a larger budget continues

    def checkpoint() -> None:
        states = dist.all_gather(rng_state())
        if dist.is_main:
            save_checkpoint(last_path, _state(task, schedulers, counters, states))

    started, first_step, seconds_before = time.monotonic(), counters.step, counters.seconds
    waited = 0.0
    while counters.step < total:
        order = sampler.indices(counters.epoch)
        usable = order[: steps_per_epoch * batch_size][counters.step_in_epoch * batch_size :]
        # Its own generator: worker seeds are reproducible and the global RNG is left alone.
        loader_rng = torch.Generator().manual_seed(mix(cfg.seed, task.name, counters.epoch) + counters.step_in_epoch)
        loader = DataLoader(
            dataset,
            batch_size=local_batch,
            sampler=RankShard(usable, dist.rank, dist.world_size),
            num_workers=cfg.num_workers,
            generator=loader_rng,
            pin_memory=task.device.type == "cuda",
        )
        for module in task.modules.values():
            module.train()
        fetch = time.monotonic()
        for batch in loader:
            data_s = time.monotonic() - fetch
            losses = _step(task, batch)
            losses, stopping = dist.mean_and_any({**losses, "data_s": data_s}, stop())
            data_s = losses.pop("data_s")
            waited += data_s
            for scheduler in schedulers.values():
                scheduler.step()
            counters.step += 1
            counters.step_in_epoch += 1
            counters.seconds = seconds_before + time.monotonic() - started
            lr = next(iter(task.optimizers.values())).param_groups[0]["lr"]
            record = {"stage": task.name, "kind": "train", "step": counters.step, "epoch": counters.epoch, "lr": lr}
            if dist.is_main:
                log.write({**record, "seconds": round(counters.seconds, 2), "data_s": round(data_s, 4), **losses})
            session = max(counters.seconds - seconds_before, 1e-9)
            rate = (counters.step - first_step) / session
            progress(
                counters.step / total,
                f"{task.name} step {counters.step}/{total} epoch {counters.epoch + 1} "
                f"({rate:.2f} it/s, {waited / session:.0%} waiting for data)",
            )
            if cfg.validate_every and counters.step % cfg.validate_every == 0 and counters.step < total:
                _validate(task, validate, counters, checkpoint_dir, log)
            if counters.step % cfg.checkpoint_every == 0:
                checkpoint()
            if stopping:
                checkpoint()
                raise TrainingStopped(f"stopped at {task.name} step {counters.step}; continue with --resume")
            if counters.step >= total:
                break
            fetch = time.monotonic()
        else:  # the epoch ran to its end
            counters.epoch += 1
            counters.step_in_epoch = 0
        if counters.step_in_epoch == 0 or counters.step >= total:
            _validate(task, validate, counters, checkpoint_dir, log)
        checkpoint()
    _validate(task, validate, counters, checkpoint_dir, log)  # a stopped stage ended by a lower budget
    counters.completed = True
    checkpoint()
    dist.barrier()  # rank 0's checkpoints are on disk before any rank reads them
    return counters


def _step(task: Task, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """One training step; running out of GPU memory becomes a one-line error naming the batch that fits."""
    try:
        return task.train_step(batch)
    except OutOfMemory:
        pass  # leave the handler first: its traceback holds the failed step's tensors
    raise batch_too_large(task, batch, batch_flag(task.name))


def _validate(task: Task, validate: Validator | None, counters: Counters, checkpoint_dir: Path, log: MetricsLog) -> None:
    if validate is None or counters.validated_step == counters.step:
        return
    counters.validated_step = counters.step
    for module in task.modules.values():
        module.eval()
    scores = validate(task)  # the same scores on every rank
    for module in task.modules.values():
        module.train()
    if task.dist.is_main:
        log.write({"stage": task.name, "kind": "val", "step": counters.step, "epoch": counters.epoch, **scores})
    if scores["score"] < counters.best_score:
        counters.best_score = scores["score"]
        if task.dist.is_main:
            best = {"modules": _weights(task), "counters": asdict(counters)}
            save_checkpoint(checkpoint_dir / f"{task.name}_best.pt", best)


def _weights(task: Task) -> dict[str, dict[str, torch.Tensor]]:
    return {name: module.state_dict() for name, module in task.modules.items()}


def _state(task: Task, schedulers: dict[str, Any], counters: Counters, rng: list[dict[str, Any]]) -> dict[str, Any]:
    """A checkpoint's contents; ``rng`` holds each rank's RNG state, in rank order."""
    return {
        "stage": task.name,
        "modules": _weights(task),
        "optimizers": {k: opt.state_dict() for k, opt in task.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "counters": asdict(counters),
        "rng": rng,
        "config": config_record(task.model_cfg, task.train_cfg),  # compared with run.json on resume
    }


def _restore(state: dict[str, Any], task: Task, schedulers: dict[str, Any]) -> Counters:
    """Load a checkpoint checked by ``run_folder.check_checkpoint``; what that cannot see
    (optimiser or RNG state of another shape) is still a one-line error."""
    if state.get("stage") != task.name:
        raise RegC2PError(f"checkpoint is for {state.get('stage')!r}, not {task.name!r}; use a fresh run folder")
    try:
        for name, module in task.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, opt in task.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, scheduler in schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        saved = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one dict: a one-process checkpoint
        set_rng_state(saved[task.dist.rank % len(saved)])
        return Counters(**state["counters"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        reason = one_line(exc)
        raise RegC2PError(f"the {task.name} checkpoint does not fit this run ({reason}); delete it to restart the stage") from exc


def stage_seconds(checkpoint_dir: Path, stage: str) -> float:
    """Wall time spent training ``stage`` in this run folder, summed over resumed sessions."""
    path = checkpoint_dir / f"{stage}_last.pt"
    return float(load_checkpoint(path)["counters"].get("seconds", 0.0)) if path.exists() else 0.0


def load_stage_weights(checkpoint_dir: Path, stage: str, keep: str) -> dict[str, dict[str, torch.Tensor]]:
    """Module weights of ``stage``: its best validated step (else its last checkpoint) for
    ``keep="best"``, its last checkpoint for ``keep="last"``."""
    names = (f"{stage}_best.pt", f"{stage}_last.pt") if keep == "best" else (f"{stage}_last.pt",)
    for name in names:
        if (checkpoint_dir / name).exists():
            return load_checkpoint(checkpoint_dir / name)["modules"]
    raise RegC2PError(f"no {stage} checkpoint in {checkpoint_dir}; train that stage first (--stage 1 or all)")
