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

A task calls its networks through wrappers (:meth:`.distributed.Distributed.wrap`):
DistributedDataParallel around what it trains when several processes share the run
(G and R as one module, since one backward pass steps both; D), ``torch.compile`` when
asked. Every loss is a mean over the batch's samples (InstanceNorm normalises each
sample on its own), so the mean of the ranks' gradients that DDP computes is the
gradient of the global batch.
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
from .distributed import SINGLE, Distributed
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
    unit: str  # what one sample of the stage is, for messages
    generator: Generator  # trained in stage 1, frozen in stage 2; validation runs it
    modules: dict[str, nn.Module]  # the networks themselves (checkpoints hold their weights)
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, model: ModelConfig, train: TrainConfig, device: torch.device, dist: Distributed = SINGLE) -> None:
        self.model_cfg, self.train_cfg, self.device, self.dist = model, train, device, dist

    def autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on CUDA when ``amp`` is on; full float32 elsewhere."""
        if self.train_cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def spare(self) -> Task:
        """A fresh task of the same kind and configuration on the same device, in this
        process alone and not compiled (to find out what fits in memory)."""
        raise NotImplementedError

    def release(self) -> None:
        """Give back the device memory of the trained networks and optimiser state; the task is unusable after."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()
        for module in self.modules.values():
            module.to("cpu")

    def _prepare(self, module: nn.Module) -> nn.Module:
        """``module`` on the device, in channels-last layout when asked."""
        module = module.to(self.device)
        return module.to(memory_format=self._layout(module)) if self.train_cfg.channels_last else module

    def _wrap(self, module: nn.Module, trained: bool) -> nn.Module:
        return self.dist.wrap(module, self.device, trained, self.train_cfg.compile_networks)

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's CT and PET on the device, copied asynchronously from pinned memory. (They
        have one channel, so their memory is already in channels-last order too.)"""
        return batch["ct"].to(self.device, non_blocking=True), batch["pet"].to(self.device, non_blocking=True)

    @staticmethod
    def _layout(module: nn.Module) -> torch.memory_format:
        return torch.channels_last_3d if isinstance(module, Refiner) else torch.channels_last

    def _adam(self, params: Iterator[nn.Parameter], lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=lr, betas=(self.train_cfg.beta1, self.train_cfg.beta2))


class _Translation(nn.Module):
    """G and R as one module: DDP averages the gradients of both from the one backward pass that steps them."""

    def __init__(self, generator: Generator, registration: RegistrationNet | None) -> None:
        super().__init__()
        self.generator, self.registration = generator, registration

    def forward(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G(ct) (N, 1, M, M) and R's field (N, 2, M, M) from it onto ``pet`` (None without R)."""
        fake = self.generator(ct)
        return fake, self.registration(fake, pet) if self.registration is not None else None


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for ``module``'s weights in what runs inside (they flow through it still)."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class GanTask(Task):
    name = "stage1"
    unit = "slices"

    def __init__(self, model: ModelConfig, train: TrainConfig, device: torch.device, dist: Distributed = SINGLE) -> None:
        super().__init__(model, train, device, dist)
        self.generator = self._prepare(Generator(model.generator))
        self.registration = self._prepare(RegistrationNet(model.registration)) if train.mode == "regc2p" else None
        self.discriminator = self._prepare(Discriminator(model.discriminator))
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        g_params = list(self.generator.parameters())
        if self.registration is not None:
            self.modules["registration"] = self.registration
            g_params += list(self.registration.parameters())
        self.optimizers = {
            "generator": self._adam(iter(g_params), train.lr),
            "discriminator": self._adam(self.discriminator.parameters(), train.lr),
        }
        self._translate = self._wrap(_Translation(self.generator, self.registration), trained=True)
        self._judge = self._wrap(self.discriminator, trained=True)  # D's own step
        self._judge_frozen = self._wrap(self.discriminator, trained=False)  # D as G's adversary

    def spare(self) -> GanTask:
        return GanTask(self.model_cfg, self.train_cfg.replace(compile_networks=False), self.device)

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.train_cfg
        per_image = cfg.adversarial_loss == "image"
        ct, pet = self._inputs(batch)
        with self.autocast():
            fake, field = self._translate(ct, pet)
            if field is not None:
                corr = F.l1_loss(warp(fake, field), pet)
                smooth = smoothness_loss(field)
            else:
                corr = F.l1_loss(fake, pet)
                smooth = torch.zeros((), device=self.device)
            with _frozen(self.discriminator):  # G's step does not need D's weight gradients
                adv = lsgan(self._judge_frozen(fake), real=True, per_image=per_image)
            loss = cfg.lambda_corr * corr + cfg.lambda_smooth * smooth + cfg.lambda_adv * adv
        require_finite(self.name, loss_g=loss, l_corr=corr, l_smooth=smooth, l_adv=adv)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["generator"].step()

        with self.autocast():
            d_loss = lsgan(self._judge(fake.detach()), real=False, per_image=per_image) + lsgan(
                self._judge(pet), real=True, per_image=per_image
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
    unit = "windows"

    def __init__(
        self,
        model: ModelConfig,
        train: TrainConfig,
        device: torch.device,
        generator: Generator,
        registration: RegistrationNet | None,
        dist: Distributed = SINGLE,
    ) -> None:
        super().__init__(model, train, device, dist)
        if train.refiner_target == "registered" and registration is None:
            raise ValueError("refiner_target 'registered' needs the registration network from stage 1")
        self.generator = self._prepare(generator).eval().requires_grad_(False)
        self.registration = self._prepare(registration).eval().requires_grad_(False) if registration is not None else None
        self.refiner = self._prepare(Refiner(model.refiner))
        self.modules = {"refiner": self.refiner}
        self.optimizers = {"refiner": self._adam(self.refiner.parameters(), train.refiner_lr)}
        self._refine = self._wrap(self.refiner, trained=True)
        self._generate = self._wrap(self.generator, trained=False)
        self._register = self._wrap(self.registration, trained=False) if self.registration is not None else None

    def spare(self) -> RefinerTask:
        cfg = self.train_cfg.replace(compile_networks=False)
        return RefinerTask(self.model_cfg, cfg, self.device, self.generator, self.registration)

    @torch.no_grad()
    def inputs_and_targets(self, ct: torch.Tensor, pet: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows (B, s, M, M) of CT and misaligned PET -> G's stacked slices and F's target."""
        b, s, h, w = ct.shape
        with self.autocast():
            stacked = self._generate(ct.reshape(b * s, 1, h, w)).float()
        target = pet.reshape(b * s, 1, h, w)
        if self.train_cfg.refiner_target == "registered":
            assert self._register is not None
            with self.autocast():
                field = self._register(stacked, target).float()
            target = warp(target, invert_field(field))
        return stacked.reshape(b, 1, s, h, w), target.reshape(b, 1, s, h, w)

    def train_step(self, batch: Batch) -> dict[str, float]:
        stacked, target = self.inputs_and_targets(*self._inputs(batch))
        with self.autocast():
            loss = F.l1_loss(self._refine(stacked), target)
        require_finite(self.name, loss_f=loss)
        self.optimizers["refiner"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["refiner"].step()
        return {"loss_f": loss.item(), "l1_unrefined": F.l1_loss(stacked, target).item()}
