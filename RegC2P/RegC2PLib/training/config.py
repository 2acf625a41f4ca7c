"""Training configuration: one object that every entry point builds and the loop reads.

Every field carries its command-line help in ``metadata["help"]``; ``regc2p train`` (and the
Slicer batch script) generate their options from these fields
(:func:`RegC2PLib.commands.options.add_config_options`), so a new option is one new field.
Defaults are RegGAN's (Adam 1e-4, betas 0.5/0.999, λ 20/10/1, batch 1, 80 epochs; see
``docs/method.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .. import values
from ..choices import DEVICE_CHOICES

MODES = ("regc2p", "pix2pix")
STAGES = ("1", "2", "all")
STAGE_NAMES = ("stage1", "stage2")
REFINER_TARGETS = ("registered", "misaligned")
ADVERSARIAL_LOSSES = ("image", "patch")
LR_SCHEDULES = ("constant", "linear-decay")
KEEP_CHOICES = ("best", "last")
# The fields a continued (resumed) run may change: its budget, stage and kept weights, and
# how fast the machine it continues on runs it.
RESUME_OVERRIDES = ("stage", "epochs", "refiner_epochs", "max_steps", "keep", "num_workers", "compile_networks", "channels_last")
# Bounds: far beyond any sensible run, so that only mistakes are refused.
MAX_COUNT = 10**9  # epochs, steps
MAX_BATCH = 4096
MAX_WORKERS = 256
MAX_LR = 1.0
MAX_LAMBDA = 1e6


def _option(help: str, **extra: Any) -> dict[str, Any]:
    """Field metadata: the option's help text, plus ``choices``/``metavar``/``flag`` for argparse."""
    return {"help": help, **extra}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stage 1 trains G (+R in ``regc2p`` mode) and D; stage 2 trains F.

    ``refiner_target``: what F learns to produce from G's stacked slices — ``registered``:
    the misaligned PET warped onto G's output by the inverse of R's field (F then learns
    slice consistency, not the misalignment R removed; needs R), or ``misaligned``: the
    PET as acquired. Empty: ``registered`` with R, ``misaligned`` in pix2pix mode.
    """

    mode: str = field(default="regc2p", metadata=_option("regc2p: G, R and D; pix2pix: no R", choices=MODES))
    stage: str = field(
        default="all", metadata=_option("1: G+R+D; 2: the refiner (continue a run with --resume); all: both", choices=STAGES)
    )
    epochs: int = field(default=80, metadata=_option("stage-1 epochs"))
    refiner_epochs: int = field(default=20, metadata=_option("stage-2 epochs"))
    max_steps: int = field(default=0, metadata=_option("cap on the steps of each stage (0: no cap)"))
    batch_size: int = field(default=1, metadata=_option("stage-1 slices per step"))
    refiner_batch_size: int = field(default=1, metadata=_option("stage-2 windows per step"))
    lr: float = field(default=1e-4, metadata=_option("Adam learning rate of G, R and D"))
    refiner_lr: float = field(default=1e-4, metadata=_option("Adam learning rate of the refiner F"))
    beta1: float = field(default=0.5, metadata=_option("Adam beta1 (all optimisers)"))
    beta2: float = field(default=0.999, metadata=_option("Adam beta2 (all optimisers)"))
    lr_schedule: str = field(
        default="constant",
        metadata=_option("constant, or linear decay to 0 from --decay-start (CycleGAN/RegGAN)", choices=LR_SCHEDULES),
    )
    decay_start: float = field(default=0.5, metadata=_option("fraction of each stage's steps after which linear decay starts"))
    lambda_corr: float = field(default=20.0, metadata=_option("weight of the (registration-corrected) L1 term"))
    lambda_smooth: float = field(default=10.0, metadata=_option("weight of the smoothness of R's field"))
    lambda_adv: float = field(default=1.0, metadata=_option("weight of the adversarial term"))
    adversarial_loss: str = field(
        default="image",
        metadata=_option("image: D's map averaged per image (RegGAN); patch: every patch (PatchGAN)", choices=ADVERSARIAL_LOSSES),
    )
    refiner_target: str = field(
        default="",
        metadata=_option(
            "registered: the PET warped onto G's output by R's inverse field; misaligned: the PET as acquired "
            "(default: registered with R, misaligned in pix2pix mode)",
            choices=REFINER_TARGETS,
        ),
    )
    checkpoint_every: int = field(default=200, metadata=_option("steps between checkpoints"))
    validate_every: int = field(default=0, metadata=_option("also validate every N steps (0: at epoch ends only)"))
    num_workers: int = field(default=0, metadata=_option("data-loading worker processes", flag="--workers"))
    seed: int = field(default=0, metadata=_option("seed of the split, the initial weights and the sample order"))
    deterministic: bool = field(default=False, metadata=_option("deterministic algorithms only (slower on GPUs)"))
    amp: bool = field(default=True, metadata=_option("bfloat16 mixed precision on CUDA"))
    compile_networks: bool = field(
        default=False,
        metadata=_option(
            "torch.compile the networks: faster steps after a compilation of a minute or more (docs/training-at-scale.md)",
            flag="--compile",
        ),
    )
    channels_last: bool = field(
        default=False,
        metadata=_option("channels-last (NHWC) memory layout for networks and batches (docs/training-at-scale.md)"),
    )
    device: str = field(default="auto", metadata=_option("compute device", choices=DEVICE_CHOICES))
    init_from: str = field(
        default="",
        metadata=_option("fine-tune: G (and F) start from this model file; R and D start fresh", metavar="MODEL"),
    )
    lesion_fraction: float = field(
        default=0.0,
        metadata=_option("repeat slices showing a lesion (studies with a lesions map) to this share of stage 1 (0: off)"),
    )
    keep: str = field(
        default="best",
        metadata=_option("weights each stage keeps: best (lowest validation MAE) or last", choices=KEEP_CHOICES),
    )

    def __post_init__(self) -> None:
        if not self.refiner_target:
            object.__setattr__(self, "refiner_target", "registered" if self.mode == "regc2p" else "misaligned")
        for f in dataclasses.fields(self):
            if "choices" in f.metadata:
                values.one_of(f.name, getattr(self, f.name), f.metadata["choices"])
        if self.refiner_target == "registered" and self.mode != "regc2p" and self.stage != "1":
            raise ValueError("refiner_target 'registered' needs mode regc2p (R); use refiner_target 'misaligned' with pix2pix")
        for name in ("epochs", "refiner_epochs", "checkpoint_every"):
            values.whole(name, getattr(self, name), 1, MAX_COUNT)
        for name in ("batch_size", "refiner_batch_size"):
            values.whole(name, getattr(self, name), 1, MAX_BATCH)
        values.whole("max_steps", self.max_steps, 0, MAX_COUNT)
        values.whole("validate_every", self.validate_every, 0, MAX_COUNT)
        values.whole("num_workers", self.num_workers, 0, MAX_WORKERS)
        values.seed("seed", self.seed)
        for name in ("lr", "refiner_lr"):
            values.finite(name, getattr(self, name), 0.0, MAX_LR)
        for name in ("beta1", "beta2"):
            values.finite(name, getattr(self, name), 0.0, 1.0, high_open=True)
        for name in ("lambda_corr", "lambda_smooth", "lambda_adv"):
            values.finite(name, getattr(self, name), 0.0, MAX_LAMBDA)
        values.finite("decay_start", self.decay_start, 0.0, 1.0)
        values.finite("lesion_fraction", self.lesion_fraction, 0.0, 1.0, high_open=True)
        for name in ("deterministic", "amp"):
            values.flag(name, getattr(self, name))
        if not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a path (got {self.init_from!r})")

    def epochs_of(self, stage: str) -> int:
        """Epochs of ``stage`` (``stage1``/``stage2``)."""
        return self.epochs if stage == "stage1" else self.refiner_epochs

    def batch_size_of(self, stage: str) -> int:
        """Samples per step of ``stage``: slices in stage 1, windows in stage 2."""
        return self.batch_size if stage == "stage1" else self.refiner_batch_size

    def stages(self) -> tuple[str, ...]:
        """The stage names this run trains, in order."""
        return STAGE_NAMES if self.stage == "all" else (STAGE_NAMES[int(self.stage) - 1],)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ValueError("the training options must be a JSON object")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
