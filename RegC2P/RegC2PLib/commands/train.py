"""``regc2p train``: stage 1 (G+R+D) and stage 2 (refiner F) on a dataset folder."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from ..config import PRESETS, ModelConfig, preset
from ..errors import InputError
from ..inference.device import DEVICE_CHOICES
from ..model_file import read_config
from ..training.config import (
    ADVERSARIAL_LOSSES,
    KEEP_CHOICES,
    LR_SCHEDULES,
    MODES,
    REFINER_TARGETS,
    STAGES,
    TrainConfig,
    resume_overrides,
)
from ..training.loop import StopRequest, TrainingStopped
from ..training.runner import RunOptions, train
from .progress_display import add_progress_option, progress_display

_DEFAULTS = TrainConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train G+R+D (stage 1) and the 3D refiner (stage 2) on a dataset",
        description="Train RegC2P on a dataset folder (one sub-folder per study, see docs/datasets.md) or a RegGAN/CPDM "
        "slice folder (stage 1 only). The run folder receives the config, the split manifest, checkpoints, "
        "metrics.jsonl, curves.png and the final model.safetensors. Ctrl-C stops cleanly; --resume continues.",
    )
    p.add_argument("--data", type=Path, help="dataset folder (not needed with --resume)")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; must be new unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--preset", choices=sorted(PRESETS), help="network sizes (default: small, or --init-from's)")
    p.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL",
        help="fine-tune: start G (and F) from this model file instead of random weights; R and D start fresh",
    )
    p.add_argument("--image-size", type=int, help="slice size M (default: the preset's)")
    p.add_argument("--mode", choices=MODES, default=_DEFAULTS.mode, help="regc2p (with R, default) or pix2pix (no R)")
    # These five (RESUME_OVERRIDES) may also be given with --resume: a stored run's budget, stage, kept weights.
    p.add_argument("--stage", choices=STAGES, help="1: G+R+D; 2: refiner (with --resume, after stage 1); all (default)")
    p.add_argument("--epochs", type=int, help=f"stage-1 epochs (default {_DEFAULTS.epochs})")
    p.add_argument("--refiner-epochs", type=int, help=f"stage-2 epochs (default {_DEFAULTS.refiner_epochs})")
    p.add_argument("--max-steps", type=int, help="cap on steps per stage (default 0: no cap)")
    p.add_argument(
        "--keep",
        choices=KEEP_CHOICES,
        help="weights each stage keeps for stage 2 and the model file: best (lowest validation MAE, default) or last",
    )
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="stage-1 slices per step (default 1)")
    p.add_argument("--refiner-batch-size", type=int, default=_DEFAULTS.refiner_batch_size, help="stage-2 windows per step")
    p.add_argument("--window", type=int, help="refiner window s (default: the preset's)")
    p.add_argument("--stride", type=int, help="refiner validation stride k (default: the preset's)")
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="Adam learning rate for G, R and D")
    p.add_argument("--refiner-lr", type=float, default=_DEFAULTS.refiner_lr)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=_DEFAULTS.lr_schedule)
    p.add_argument(
        "--lesion-fraction",
        type=float,
        default=_DEFAULTS.lesion_fraction,
        metavar="F",
        help="repeat slices showing a lesion (studies with a lesions map) to this share of stage 1 (default 0: off)",
    )
    p.add_argument("--lambda-corr", type=float, default=_DEFAULTS.lambda_corr)
    p.add_argument("--lambda-smooth", type=float, default=_DEFAULTS.lambda_smooth)
    p.add_argument("--lambda-adv", type=float, default=_DEFAULTS.lambda_adv)
    p.add_argument("--adversarial-loss", choices=ADVERSARIAL_LOSSES, default=_DEFAULTS.adversarial_loss)
    p.add_argument("--refiner-target", choices=REFINER_TARGETS, default=_DEFAULTS.refiner_target)
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, help="steps between checkpoints")
    p.add_argument(
        "--validate-every", type=int, default=_DEFAULTS.validate_every, help="also validate every N steps (0: per epoch)"
    )
    p.add_argument("--workers", type=int, default=_DEFAULTS.num_workers, help="data-loading worker processes")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only (slower on GPU)")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 mixed precision on CUDA")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    add_progress_option(p)
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, dict[str, object]]:
    """Model and training configs from the options, plus the options a resumed run may change."""
    from_init = args.init_from and not args.preset  # fine-tuning keeps the model's own networks
    model_cfg = read_config(args.init_from) if from_init else preset(args.preset or "small")
    changes = {}
    if args.image_size is not None:  # "is not None": 0 is a value to refuse, not "the default"
        changes["image_size"] = args.image_size
    if args.window is not None or args.stride is not None:
        window = args.window if args.window is not None else model_cfg.refiner.window
        stride = args.stride if args.stride is not None else min(model_cfg.refiner.stride, max(window, 1))
        changes["refiner"] = dataclasses.replace(model_cfg.refiner, window=window, stride=stride)
    if changes:
        model_cfg = model_cfg.with_changes(**changes)
    overrides = resume_overrides(args)
    train_cfg = TrainConfig(
        **overrides,
        mode=args.mode,
        batch_size=args.batch_size,
        refiner_batch_size=args.refiner_batch_size,
        lr=args.lr,
        refiner_lr=args.refiner_lr,
        lr_schedule=args.lr_schedule,
        lambda_corr=args.lambda_corr,
        lambda_smooth=args.lambda_smooth,
        lambda_adv=args.lambda_adv,
        adversarial_loss=args.adversarial_loss,
        refiner_target=args.refiner_target if args.mode == "regc2p" else "misaligned",
        checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every,
        num_workers=args.workers,
        seed=args.seed,
        deterministic=args.deterministic,
        amp=not args.no_amp,
        device=args.device,
        init_from=str(args.init_from.resolve()) if args.init_from else "",
        lesion_fraction=args.lesion_fraction,
    )
    return model_cfg, train_cfg, overrides


def run(args: argparse.Namespace) -> int:
    try:
        model_cfg, train_cfg, overrides = _configs(args)
    except ValueError as exc:
        raise InputError(f"invalid training options: {exc}") from exc
    stop = StopRequest(args.out / "STOP")
    previous = signal.signal(signal.SIGINT, lambda *_: setattr(stop, "flag", True))
    try:
        with progress_display(args.progress, "train") as progress:
            options = RunOptions(args.data, args.out, model_cfg, train_cfg, args.resume, " ".join(sys.argv), overrides)
            model_path = train(options, progress, stop, notify=lambda message: print(message, file=sys.stderr))
    except TrainingStopped as exc:
        print(f"regc2p: {exc}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"wrote {model_path}", file=sys.stderr)
    return 0
