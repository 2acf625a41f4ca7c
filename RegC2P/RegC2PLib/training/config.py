"""Training configuration: one object, every key used (RegGAN defaults, DESIGN.md §2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import values
from ..choices import DEVICE_CHOICES

MODES = ("regc2p", "pix2pix")
STAGES = ("1", "2", "all")
REFINER_TARGETS = ("registered", "misaligned")
ADVERSARIAL_LOSSES = ("image", "patch")
LR_SCHEDULES = ("constant", "linear-decay")
KEEP_CHOICES = ("best", "last")
# The fields a continued (resumed) run may change: its budget, stage and kept weights.
RESUME_OVERRIDES = ("stage", "epochs", "refiner_epochs", "max_steps", "keep")
# Bounds: far beyond any sensible run, so that only mistakes are refused.
MAX_COUNT = 10**9  # epochs, steps
MAX_BATCH = 4096
MAX_WORKERS = 256
MAX_LR = 1.0
MAX_LAMBDA = 1e6


def resume_overrides(options: Any) -> dict[str, Any]:
    """The :data:`RESUME_OVERRIDES` fields that ``options`` (parsed command-line options) sets, i.e. not None."""
    return {key: getattr(options, key) for key in RESUME_OVERRIDES if getattr(options, key) is not None}


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stage 1 trains G (+R in ``regc2p`` mode) and D; stage 2 trains F.

    ``mode``: ``regc2p`` — L1 after registering G(x) onto the misaligned PET with R,
    plus R's smoothness loss; ``pix2pix`` — plain L1 to the misaligned PET (no R).
    ``adversarial_loss``: ``image`` (RegGAN: D's map averaged to one score per image,
    then LSGAN) or ``patch`` (LSGAN on every patch score).
    ``refiner_target``: what F learns to produce from G's stacked slices —
    ``registered``: the misaligned PET warped onto G's output by the inverse of R's
    field (so F learns slice consistency, not the misalignment R removed; needs mode
    ``regc2p``), or ``misaligned``: the PET as acquired.
    ``lr_schedule``: ``constant``, or ``linear-decay`` to 0 from ``decay_start`` (a
    fraction of each stage's steps), as in CycleGAN/RegGAN.
    ``init_from``: a model file whose G (and F, if it has one) start the run instead of
    random weights, to fine-tune a trained model on new studies; R, D and the
    optimisers start fresh. Its network config must match the run's.
    ``lesion_fraction``: 0, or the share of each stage-1 epoch made of slices that show a
    lesion (studies with a lesion map), repeated to reach it — lesions are a tiny part of
    the pixels and L1 learns them last.
    ``keep``: which weights of each stage the run keeps (stage 2 trains F on that G, and
    the model file holds that G and F): ``best`` — the lowest validation MAE; ``last`` —
    the final step, as RegGAN tests its last epoch (with a learning rate decayed to 0).
    ``max_steps`` caps each stage (0: no cap); ``checkpoint_every`` is in steps;
    validation runs at the end of every epoch and of the stage, and also every
    ``validate_every`` steps when that is not 0 (best checkpoints within long epochs).
    """

    mode: str = "regc2p"
    stage: str = "all"
    epochs: int = 80
    refiner_epochs: int = 20
    max_steps: int = 0
    batch_size: int = 1
    refiner_batch_size: int = 1
    lr: float = 1e-4
    refiner_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = "constant"
    decay_start: float = 0.5
    lambda_corr: float = 20.0
    lambda_smooth: float = 10.0
    lambda_adv: float = 1.0
    adversarial_loss: str = "image"
    refiner_target: str = "registered"
    checkpoint_every: int = 200
    validate_every: int = 0
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    amp: bool = True
    device: str = "auto"
    init_from: str = ""
    lesion_fraction: float = 0.0
    keep: str = "best"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("mode", MODES),
            ("stage", STAGES),
            ("refiner_target", REFINER_TARGETS),
            ("adversarial_loss", ADVERSARIAL_LOSSES),
            ("lr_schedule", LR_SCHEDULES),
            ("keep", KEEP_CHOICES),
            ("device", DEVICE_CHOICES),
        ):
            values.one_of(name, getattr(self, name), allowed)
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
