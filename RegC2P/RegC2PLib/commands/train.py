"""``regc2p train``: stage 1 (G+R+D) and stage 2 (refiner F) on a dataset folder.

The training options are generated from :class:`~RegC2PLib.training.config.TrainConfig`
(one option per field, help in the field's metadata); the network options (``--preset``,
``--image-size``, ``--pixel-mm``, ``--window``, ``--stride``) choose the
:class:`~RegC2PLib.config.ModelConfig`. The RegC2P Training batch script takes the same
options (:func:`add_options`, :func:`run_options`). Only torch-free modules are imported
here; the training code is imported when the command runs.

Several processes (GPUs): run it under ``torchrun`` (``torchrun --nproc_per_node N -m
RegC2PLib train ...``, or ``--processes N``, which starts that on this machine); rank 0
reports, the other ranks print nothing but their own failures. Under torchrun a clean
stop exits with status 0, so that torchrun's agent does not restart the workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import PRESETS, ModelConfig, preset
from ..errors import InputError
from ..training.config import RESUME_OVERRIDES, TrainConfig
from ..training.sources import parse_source, with_splits
from .launch import PROCESSES_FLAG, launch, under_torchrun
from .options import add_config_options, given_options, option_flag
from .progress_display import add_progress_option, progress_display

if TYPE_CHECKING:
    from ..training.runner import RunOptions

DESCRIPTION = (
    "Train RegC2P on a dataset folder (one sub-folder per study, see docs/datasets.md) or a RegGAN/CPDM slice folder "
    "(stage 1 only). The run folder receives the config, the split manifest, checkpoints, metrics.jsonl, curves.png and "
    f"the final model.safetensors. Ctrl-C stops cleanly; --resume continues (and may change {', '.join(RESUME_OVERRIDES)})."
)
NETWORK_OPTIONS = ("preset", "image_size", "pixel_mm", "pet_suv_max", "window", "stride")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train G+R+D (stage 1) and the 3D refiner (stage 2) on a dataset", description=DESCRIPTION
    )
    add_options(p)
    p.set_defaults(func=run)


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every ``regc2p train`` option: the run folder, the network options and one option per
    :class:`TrainConfig` field; read them with :func:`run_options`."""
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="[NAME=]DIR[:WEIGHT]",
        help="dataset folder(s), not needed with --resume; several are mixed, each WEIGHT its share of each epoch "
        "(default 1), NAME labelling its validation figures (default: the folder's name)",
    )
    parser.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="[NAME=]MANIFEST",
        help="use this split manifest (e.g. a run's split.json) for dataset NAME instead of a new seeded split",
    )
    parser.add_argument("--out", required=True, type=Path, help="run folder (created; must be new unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument(
        PROCESSES_FLAG,
        type=int,
        default=1,
        metavar="N",
        help="train as N processes on this machine, one per GPU (runs torchrun --standalone; see docs/training-at-scale.md)",
    )
    networks = parser.add_argument_group("networks (default: the small preset, or the --init-from model's)")
    networks.add_argument("--preset", choices=sorted(PRESETS), help="network sizes")
    networks.add_argument("--image-size", type=int, help="slice size M in pixels (default: the preset's)")
    networks.add_argument("--pixel-mm", type=float, help="in-plane pixel size of the model grid in mm (default: the preset's)")
    networks.add_argument(
        "--pet-suv-max",
        type=float,
        help="SUV at the top of the PET scale [-1, 1]; higher uptake is clipped to it (default: the preset's, 20)",
    )
    networks.add_argument("--window", type=int, help="refiner window s in slices (default: the preset's)")
    networks.add_argument("--stride", type=int, help="refiner validation stride k (default: the preset's)")
    add_config_options(parser.add_argument_group("training"), TrainConfig)
    add_progress_option(parser)


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The network configuration the options ask for: a preset, or the ``--init-from`` model's own, with changes."""
    init_from = getattr(args, "init_from", "")
    if init_from and not args.preset:
        from ..model_file import read_config

        model_cfg = read_config(init_from, fine_tuning=True)
    else:
        model_cfg = preset(args.preset or "small")
    # "is not None": 0 is a value to refuse, not "the default"
    changes: dict[str, object] = {name: getattr(args, name) for name in ("image_size", "pixel_mm")}
    changes = {name: value for name, value in changes.items() if value is not None}
    try:
        if args.pet_suv_max is not None:
            changes["intensity"] = dataclasses.replace(model_cfg.intensity, pet_suv_max=args.pet_suv_max)
        if args.window is not None or args.stride is not None:
            window = args.window if args.window is not None else model_cfg.refiner.window
            stride = args.stride if args.stride is not None else min(model_cfg.refiner.stride, max(window, 1))
            changes["refiner"] = dataclasses.replace(model_cfg.refiner, window=window, stride=stride)
        return model_cfg.with_changes(**changes) if changes else model_cfg
    except ValueError as exc:
        raise InputError(f"invalid network options: {exc}") from exc


def run_options(args: argparse.Namespace, command: str) -> RunOptions:
    """A :class:`RunOptions` from parsed options: a new run's configs, or a resume's allowed changes."""
    from ..training.runner import RunOptions

    given = given_options(args, TrainConfig)
    if args.resume:
        if args.data or args.split:
            raise InputError("--data and --split cannot change when a run is continued (run.json keeps its datasets)")
        fixed = sorted(set(given) - set(RESUME_OVERRIDES))
        network = [name for name in NETWORK_OPTIONS if getattr(args, name) is not None]
        if fixed or network:
            flags = [option_flag(TrainConfig, name) for name in fixed] + ["--" + n.replace("_", "-") for n in network]
            raise InputError(
                f"{', '.join(flags)} cannot change when a run is continued (run.json keeps its configuration); "
                f"a resume may change only {', '.join('--' + n.replace('_', '-') for n in RESUME_OVERRIDES)}"
            )
        return RunOptions(args.out, resume=True, command=command, resume_overrides=given)
    try:
        train_cfg = TrainConfig(**given)
    except ValueError as exc:
        raise InputError(f"invalid training options: {exc}") from exc
    sources = with_splits([parse_source(spec) for spec in args.data or ()], args.split)
    return RunOptions(args.out, sources, model_config(args), train_cfg, command=command)


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import PeerError, launched_rank
    from ..training.loop import StopRequest, TrainingStopped
    from ..training.runner import train

    if args.processes < 1:
        raise InputError(f"{PROCESSES_FLAG} must be at least 1 (got {args.processes})")
    options = run_options(args, " ".join(sys.argv))
    if args.processes > 1:
        return launch(args.processes, args.argv, args.out)
    main = launched_rank() == 0
    stop = StopRequest(args.out / "STOP")
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(stop, "flag", True))
    report = (lambda message: print(message, file=sys.stderr)) if main else (lambda message: None)
    try:
        with progress_display(args.progress if main else "none", "train") as progress:
            model_path = train(options, progress, stop, notify=report)
    except TrainingStopped as exc:
        report(f"regc2p: {exc}")
        return 0 if under_torchrun() else 130
    except PeerError:
        return 2  # rank 0 reports the error
    finally:
        signal.signal(signal.SIGINT, previous)
    report(f"wrote {model_path}")
    return 0
