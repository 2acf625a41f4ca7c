"""The two training stages as tasks that the one generic loop (``loop.py``) runs.

A task owns its networks and optimisers and knows how to take one step on a batch;
the loop owns epochs, schedules, checkpoints, logging and validation.

* :class:`GanTask` — stage 1: G (+R in ``regc2p`` mode) and D (docs/method.md §1–2).
  G and R step together from one backward pass of
  ``λ_corr·L1(warp(G(x), R(G(x), ỹ)), ỹ) + λ_smooth·L_smooth + λ_adv·LSGAN(D(G(x)), 1)``;
  without R (``pix2pix``) the first term is ``L1(G(x), ỹ)`` and there is no smoothness
  term. D then steps on ``LSGAN(D(G(x).detach()), 0) + LSGAN(D(ỹ), 1)``.
* :class:`RefinerTask` — stage 2: G (and R) frozen; F learns to map windows of ``s``
  stacked G outputs (s, M, M) to the target chosen by ``refiner_target``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import RegC2PError
from ..networks import Discriminator, Generator, Refiner, RegistrationNet, invert_field, smoothness_loss, warp
from .config import TrainConfig
from .losses import lsgan

Batch = dict[str, torch.Tensor]


def require_finite(stage: str, **terms: torch.Tensor) -> None:
    """Stop a step whose loss is NaN or infinite before its backward pass (which would spread
    NaN into every weight, and through ``grid_sample`` can crash the process)."""
    values = {name: float(term.detach()) for name, term in terms.items()}
    if not all(math.isfinite(v) for v in values.values()):
        shown = ", ".join(f"{name} {value:g}" for name, value in values.items())
        raise RegC2PError(
            f"{stage}: the loss is not finite ({shown}): NaN in the data or the weights, a NaN loss weight or too high a "
            "learning rate; this step was not applied and the last checkpoint is intact"
        )


class Task:
    """What the loop needs from a stage."""

    name: str
    generator: Generator  # trained in stage 1, frozen in stage 2; validation runs it
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, model: ModelConfig, train: TrainConfig, device: torch.device) -> None:
        self.model_cfg, self.train_cfg, self.device = model, train, device

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on CUDA when ``amp`` is on; full float32 elsewhere."""
        if self.train_cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def _adam(self, params: Iterator[nn.Parameter], lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=(self.train_cfg.beta1, self.train_cfg.beta2))


class GanTask(Task):
    name = "stage1"

    def __init__(self, model: ModelConfig, train: TrainConfig, device: torch.device) -> None:
        super().__init__(model, train, device)
        self.generator = Generator(model.generator).to(device)
        self.registration = RegistrationNet(model.registration).to(device) if train.mode == "regc2p" else None
        self.discriminator = Discriminator(model.discriminator).to(device)
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        g_params = list(self.generator.parameters())
        if self.registration is not None:
            self.modules["registration"] = self.registration
            g_params += list(self.registration.parameters())
        self.optimizers = {
            "generator": self._adam(iter(g_params), train.lr),
            "discriminator": self._adam(self.discriminator.parameters(), train.lr),
        }

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.train_cfg
        per_image = cfg.adversarial_loss == "image"
        ct, pet = batch["ct"].to(self.device), batch["pet"].to(self.device)
        with self.autocast():
            fake = self.generator(ct)
            if self.registration is not None:
                field = self.registration(fake, pet)
                corr = F.l1_loss(warp(fake, field), pet)
                smooth = smoothness_loss(field)
            else:
                corr = F.l1_loss(fake, pet)
                smooth = torch.zeros((), device=self.device)
            adv = lsgan(self.discriminator(fake), real=True, per_image=per_image)
            loss = cfg.lambda_corr * corr + cfg.lambda_smooth * smooth + cfg.lambda_adv * adv
        require_finite(self.name, loss_g=loss, l_corr=corr, l_smooth=smooth, l_adv=adv)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["generator"].step()

        with self.autocast():
            d_loss = lsgan(self.discriminator(fake.detach()), real=False, per_image=per_image) + lsgan(
                self.discriminator(pet), real=True, per_image=per_image
            )
        require_finite(self.name, loss_d=d_loss)
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["discriminator"].step()
        return {
            "loss_g": loss.item(),
            "l_corr": corr.item(),
            "l_smooth": smooth.item(),
            "l_adv": adv.item(),
            "loss_d": d_loss.item(),
        }


class RefinerTask(Task):
    name = "stage2"

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        device: torch.device,
        generator: Generator,
        registration: RegistrationNet | None,
    ) -> None:
        super().__init__(model, train, device)
        if train.refiner_target == "registered" and registration is None:
            raise ValueError("refiner_target 'registered' needs the registration network from stage 1")
        self.generator = generator.to(device).eval().requires_grad_(False)
        self.registration = registration.to(device).eval().requires_grad_(False) if registration is not None else None
        self.refiner = Refiner(model.refiner).to(device)
        self.modules = {"refiner": self.refiner}
        self.optimizers = {"refiner": self._adam(self.refiner.parameters(), train.refiner_lr)}

    @torch.no_grad()
    def inputs_and_targets(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows (B, s, M, M) of CT and misaligned PET -> G's stacked slices and F's target."""
        b, s, h, w = ct.shape
        with self.autocast():
            stacked = self.generator(ct.reshape(b * s, 1, h, w)).float()
        target = pet.reshape(b * s, 1, h, w)
        if self.train_cfg.refiner_target == "registered":
            assert self.registration is not None
            with self.autocast():
                field = self.registration(stacked, target).float()
            target = warp(target, invert_field(field))
        return stacked.reshape(b, 1, s, h, w), target.reshape(b, 1, s, h, w)

    def train_step(self, batch: Batch) -> dict[str, float]:
        stacked, target = self.inputs_and_targets(batch["ct"].to(self.device), batch["pet"].to(self.device))
        with self.autocast():
            loss = F.l1_loss(self.refiner(stacked), target)
        require_finite(self.name, loss_f=loss)
        self.optimizers["refiner"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["refiner"].step()
        return {"loss_f": loss.item(), "l1_unrefined": F.l1_loss(stacked, target).item()}
