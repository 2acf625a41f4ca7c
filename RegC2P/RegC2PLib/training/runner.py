"""A training run: the run folder, the split, both stages in order, the final model.

Run folder layout::

    RUN/
      run.json            model + training config, data folder, command line
      split.json          train/val/test studies (by study, seeded)
      checkpoints/        stage1_last.pt, stage1_best.pt, stage2_last.pt, stage2_best.pt
      metrics.jsonl       one JSON object per step (losses, lr) and per validation
      curves.png          losses and validation metrics (drawn when matplotlib is installed)
      init.safetensors    copy of the --init-from model whose G (and F) start the run
      model.safetensors   G + F of the kept steps (best validation, or the last with keep='last')
      STOP                create this file to stop the run cleanly (GUIs do)

Under ``torchrun`` (:mod:`.distributed`) every process runs :func:`train`; rank 0 alone
opens the run folder, builds the data cache (the others wait, then memory-map it) and
writes every file above.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path, write_json
from ..config import ModelConfig, model_differences
from ..data.split import read_manifest
from ..errors import InputError
from ..inference.device import resolve_device
from ..memory import require_memory, training_bytes
from ..model_file import LoadedModel, load_model, save_model
from ..networks import Generator, Refiner, RegistrationNet
from ..progress import ProgressCallback, ProgressRange, no_progress
from .config import RESUME_OVERRIDES, TrainConfig
from .curves import NO_MATPLOTLIB, can_plot, plot_curves
from .data_access import prepare_data
from .distributed import Distributed, elastic_restart, from_environment, per_rank_batch
from .loop import MetricsLog, StopRequest, batch_flag, load_stage_weights, run_stage
from .run_folder import RUN_FILE, discard_new_run, validate_run_folder
from .sources import DataSource, manifest_path
from .tasks import GanTask, RefinerTask
from .validation import make_validator

MODEL_FILE = "model.safetensors"
INIT_FILE = "init.safetensors"


@dataclass(frozen=True)
class RunOptions:
    """What ``regc2p train``, the batch script and the RegC2PTraining module ask for.

    A new run needs ``data`` (one dataset folder, or several :class:`~.sources.DataSource`
    with weights and split manifests), ``model`` and ``train``; on ``resume`` all three come
    from ``out/run.json`` (leave them empty) and only the fields in ``resume_overrides`` —
    a subset of :data:`~.config.RESUME_OVERRIDES` — change; each resume is listed in the
    ``resumes`` of ``run.json``.
    """

    out: Path
    data: Path | Sequence[DataSource] | None = None
    model: ModelConfig | None = None
    train: TrainConfig | None = None
    resume: bool = False
    command: str = ""
    resume_overrides: dict[str, Any] = field(default_factory=dict)


def train(
    options: RunOptions,
    progress: ProgressCallback = no_progress,
    stop: StopRequest | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> Path:
    """Run (or resume) a training run; returns the path of the final model file.

    ``notify`` receives human-readable reports (the data summary with every skipped study).
    Launched by ``torchrun``, each process calls this and joins the others.
    """
    dist = from_environment()
    try:
        return _train(options, dist, progress, stop, notify)
    finally:
        dist.close()


def _train(
    options: RunOptions,
    dist: Distributed,
    progress: ProgressCallback,
    stop: StopRequest | None,
    notify: Callable[[str], None],
) -> Path:
    out = options.out
    created = not out.exists()
    # A new run, not a resume nor torchrun's restart of a new run's command (run.json exists then).
    new_run = not options.resume and not (out / RUN_FILE).exists()
    model_cfg, train_cfg, sources = dist.on_main(lambda: _open_folder(options, dist.world_size))
    stop = stop or StopRequest(out / "STOP")
    if not dist.is_main:
        stop.stop_file = None  # rank 0 reads it; the ranks share its answer every step
    device = dist.device(resolve_device(train_cfg.device))
    _seed_everything(train_cfg, device)
    stages = train_cfg.stages()
    try:
        data = dist.main_first(
            lambda: prepare_data(sources, out, model_cfg, train_cfg.seed, "stage2" in stages, train_cfg.lesion_fraction)
        )
        if "stage2" in stages and (data.windows is None or data.window_sampler is None):
            raise InputError("stage 2 needs whole volumes; a RegGAN/CPDM slice folder only supports --stage 1")
    except BaseException:
        if new_run and dist.is_main:  # a new run refused by its data leaves nothing, so the retry is a new run again
            discard_new_run(out, created)
        raise
    if dist.is_main:
        notify(data.summary)
    log = MetricsLog(out / "metrics.jsonl")
    checkpoints = out / "checkpoints"
    init = load_model(out / INIT_FILE, fine_tuning=True) if train_cfg.init_from else None
    share = {"stage1": (0.0, 0.8 if "stage2" in stages else 1.0), "stage2": (0.8 if "stage1" in stages else 0.0, 1.0)}

    try:
        if "stage1" in stages:
            torch.manual_seed(train_cfg.seed)  # initial weights depend on the seed alone
            task = GanTask(model_cfg, train_cfg, device, dist)
            if init is not None:  # a resumed stage then loads its checkpoint over these
                task.generator.load_state_dict(init.generator.state_dict())
            validator = make_validator(data.val_volumes, model_cfg, device, False, dist)
            part = ProgressRange(progress, *share["stage1"])
            run_stage(task, data.slices, data.slice_sampler, train_cfg, checkpoints, log, validator, stop, part)
        generator, registration = _stage1_networks(model_cfg, checkpoints, train_cfg.keep)
        if "stage2" in stages:
            torch.manual_seed(train_cfg.seed + 1)
            task = RefinerTask(model_cfg, train_cfg, device, generator, registration, dist)
            if init is not None and init.refiner is not None:
                task.refiner.load_state_dict(init.refiner.state_dict())
            validator = make_validator(data.val_volumes, model_cfg, device, True, dist)
            part = ProgressRange(progress, *share["stage2"])
            run_stage(task, data.windows, data.window_sampler, train_cfg, checkpoints, log, validator, stop, part)
        refiner, refiner_source = None, ""
        if (checkpoints / "stage2_last.pt").exists():
            refiner = Refiner(model_cfg.refiner)
            refiner.load_state_dict(load_stage_weights(checkpoints, "stage2", train_cfg.keep)["refiner"])
        elif init is not None and init.refiner is not None:
            # A stage-1 fine-tune keeps the starting model's F (not retrained for the new G), so the
            # model still refines in 3D; `--resume --stage 2` trains F for the new G.
            refiner, refiner_source = init.refiner, "the --init-from model's, not retrained (stage 2 not run)"
    finally:
        if dist.is_main and log.path.exists():
            if can_plot():
                plot_curves(log.path, out / "curves.png")
            else:
                notify(NO_MATPLOTLIB)
    if dist.is_main:
        model = LoadedModel(model_cfg, generator.eval(), refiner.eval() if refiner is not None else None)
        data_record = ", ".join(f"{s.name}={s.path}:{s.weight:g}" if len(sources) > 1 else str(s.path) for s in sources)
        info = {"command": options.command, "mode": train_cfg.mode, "data": data_record, "split": data.split_digest}
        if refiner_source:
            info["refiner"] = refiner_source
        save_model(out / MODEL_FILE, model, info)
    dist.barrier()  # the model file exists when train() returns on any rank
    return out / MODEL_FILE


def _open_folder(options: RunOptions, world_size: int) -> tuple[ModelConfig, TrainConfig, tuple[DataSource, ...]]:
    """:func:`open_run`, a check that each stage's batch splits over the processes, the checkpoint folder."""
    model_cfg, train_cfg, sources = open_run(options, world_size)
    for stage in train_cfg.stages():
        per_rank_batch(train_cfg.batch_size_of(stage), world_size, batch_flag(stage))
    (options.out / "STOP").unlink(missing_ok=True)
    (options.out / "checkpoints").mkdir(exist_ok=True)
    return model_cfg, train_cfg, sources


def open_run(options: RunOptions, processes: int = 1) -> tuple[ModelConfig, TrainConfig, tuple[DataSource, ...]]:
    """Create a new run folder (``run.json``) or read a resumed one's configs and dataset folders.

    Refuses a non-empty folder for a new run, ``--stage 2`` on a new run, an ``init_from``
    model of another network config and a run that cannot fit in memory, each with a
    one-line error, before the folder is touched; a new run whose files cannot be written
    leaves no folder. On resume the whole run folder is validated first
    (:func:`.run_folder.validate_run_folder`), and the resume is recorded in ``run.json``
    only then. The ``init_from`` model and given split manifests are copied into the run
    folder, so a resume does not depend on the original files. Workers that torchrun's
    agent restarted (``--max-restarts``) with the command of a new run continue the run
    that command started, when ``run.json`` records exactly its configuration.
    ``processes`` (how many train the run this time) is recorded with the command.
    """
    out, run_file = options.out, options.out / RUN_FILE
    unknown = sorted(set(options.resume_overrides) - set(RESUME_OVERRIDES))
    if unknown:
        raise InputError(f"a continued run can only change {', '.join(RESUME_OVERRIDES)}, not {', '.join(unknown)}")
    if options.resume:
        run = validate_run_folder(out, options.resume_overrides)
        _require_memory(run.model, run.train)
        # Keep the provenance: run.json lists every resume and what it changed (once the folder has validated).
        saved = run.raw
        resume = {"command": options.command, "overrides": options.resume_overrides, "processes": processes}
        saved.setdefault("resumes", []).append(resume)
        write_json(run_file, saved)
        return run.model, run.train, run.sources
    if not options.data:
        raise InputError("--data is required for a new run; give a dataset folder")
    if options.model is None or options.train is None:
        raise InputError("a new run needs its model and training configuration")
    sources = _given_sources(options)
    for source in sources:
        if not source.path.is_dir():
            raise InputError(f"dataset folder {source.path} does not exist")
        if source.split is not None:
            read_manifest(source.split)  # a one-line error for a missing or broken manifest, before anything is written
    if out.exists() and any(out.iterdir()):
        if elastic_restart() and _records(run_file, options):
            return open_run(dataclasses.replace(options, resume=True, data=None, model=None, train=None), processes)
        raise InputError(f"run folder {out} already exists and is not empty; use --resume to continue it or choose a new folder")
    if options.train.stage == "2":
        raise InputError("--stage 2 needs a run whose stage 1 is trained: use --resume --stage 2 on that run folder")
    init = _check_init(options.train.init_from, options.model)
    _require_memory(options.model, options.train)
    created = not out.exists()
    record = {
        "model": options.model.to_dict(),
        "train": options.train.to_dict(),
        "data": [s.to_json() for s in sources],
        "command": options.command,
        "processes": processes,
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        for source in sources:
            if source.split is not None:
                with atomic_path(manifest_path(out, source, len(sources))) as tmp:
                    shutil.copyfile(source.split, tmp)
        if init is not None:
            with atomic_path(out / INIT_FILE) as tmp:
                shutil.copyfile(init.path, tmp)  # type: ignore[arg-type]
            record["init"] = {"from": str(Path(init.path).resolve()), "sha256": init.sha256}  # type: ignore[arg-type]
        write_json(run_file, record)
    except BaseException:  # e.g. a full disk: a half-made folder would block the retry
        discard_new_run(out, created)
        raise
    return options.model, options.train, sources


def _given_sources(options: RunOptions) -> tuple[DataSource, ...]:
    """The dataset folders of a new run's options (one folder or several sources), paths resolved."""
    sources = (DataSource(options.data),) if isinstance(options.data, Path) else tuple(options.data or ())
    return tuple(DataSource(s.path.resolve(), s.name, s.weight, s.split) for s in sources)


def _records(run_file: Path, options: RunOptions) -> bool:
    """Whether ``run_file`` is the ``run.json`` of a new run with exactly ``options``' data and configs."""
    if not run_file.is_file() or not options.data:
        return False
    saved = json.loads(run_file.read_text())
    return (
        saved.get("data") == [s.to_json() for s in _given_sources(options)]
        and ModelConfig.from_dict(saved["model"]) == options.model
        and TrainConfig.from_dict(saved["train"]) == options.train
    )


def _require_memory(model: ModelConfig, train: TrainConfig) -> None:
    """Refuse, before the run folder is touched, a run whose training step cannot fit in memory."""
    m = model.image_size
    require_memory(
        training_bytes(model, train),
        f"training on {m}x{m} slices in batches of {train.batch_size}",
        "lower --batch-size or --image-size",
    )


def _check_init(path: str, model: ModelConfig) -> LoadedModel | None:
    """The verified ``init_from`` model, or None; its G and F must have the run's shapes
    (the grid, slice size and intensity scaling may differ: that is what fine-tuning adapts)."""
    if not path:
        return None
    init = load_model(path, fine_tuning=True)
    if not init.config.same_networks(model):
        differences = "; ".join(model_differences(init.config, model, ("generator", "refiner")))
        raise InputError(
            f"--init-from {Path(path).name} holds other networks than this run asks for: {differences}; "
            "leave out --preset to use the model's own"
        )
    return init


def _seed_everything(cfg: TrainConfig, device: torch.device) -> None:
    """Seed every generator; on CUDA let cuDNN pick the fastest kernels for the (fixed) batch
    shapes unless the run must be deterministic."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _stage1_networks(cfg: ModelConfig, checkpoints: Path, keep: str) -> tuple[Generator, RegistrationNet | None]:
    weights = load_stage_weights(checkpoints, "stage1", keep)
    generator = Generator(cfg.generator)
    generator.load_state_dict(weights["generator"])
    registration = None
    if "registration" in weights:
        registration = RegistrationNet(cfg.registration)
        registration.load_state_dict(weights["registration"])
    return generator, registration


__all__ = ["INIT_FILE", "MODEL_FILE", "RunOptions", "open_run", "train"]
