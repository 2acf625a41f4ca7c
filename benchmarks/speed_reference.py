"""Reference loops for ``benchmarks/speed.py``: the project's networks driven the way RegGAN's code drives them.

RegGAN's test script runs its generator one slice at a time in float32 under ``torch.no_grad``;
its trainer takes batch-1 float32 steps, stepping G and R from one backward pass and then D.
The refiner (not part of RegGAN) is driven the same plain way: one window per pass. These loops
are what the project's batched code paths are timed and compared against.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from RegC2PLib.body import body_mask, in_plane_box
from RegC2PLib.config import ModelConfig
from RegC2PLib.inference import WindowPlan
from RegC2PLib.intensity import ct_to_network, network_to_pet
from RegC2PLib.model_file import LoadedModel
from RegC2PLib.networks import Discriminator, Generator, RegistrationNet, smoothness_loss, warp
from RegC2PLib.slice_grid import SliceGrid


@torch.no_grad()
def reference_generator(generator: torch.nn.Module, slices: torch.Tensor) -> torch.Tensor:
    """RegGAN's test loop: G on one (1, 1, M, M) slice per pass, float32; (n, M, M) in, (n, M, M) out, [-1, 1]."""
    return torch.stack([generator(s[None, None])[0, 0] for s in slices])


@torch.no_grad()
def reference_refine(refiner: torch.nn.Module, stack: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
    """The refiner one window per pass over a (z, M, M) stack on [-1, 1], overlapping windows averaged."""
    total = torch.zeros_like(stack)
    count = torch.zeros(stack.shape[0], 1, 1)
    for start in plan.starts:
        end = start + plan.length
        total[start:end] += refiner(stack[None, None, start:end])[0, 0]
        count[start:end] += 1
    return total / count


def reference_translate(ct: sitk.Image, model: LoadedModel, window: int, stride: int) -> np.ndarray:
    """The whole translation as plain loops: G slice by slice, then the refiner window by window.

    Same pre/post-processing as ``translate_volume`` (grid centred on the body, zero outside
    it); ``ct`` (HU) must already be axial LPS. Returns the PET in SUV as a (z, y, x) float32 array.
    """
    assert model.refiner is not None
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    spacing_zyx = ct.GetSpacing()[::-1]
    body = body_mask(hu, spacing_zyx)
    grid = SliceGrid.for_model(hu.shape[1:], spacing_zyx[1:], model.config, in_plane_box(body))
    cfg = model.config.intensity
    inputs = torch.cat(
        [grid.to_model(ct_to_network(torch.from_numpy(hu[z : z + 1]), cfg), fill=-1.0) for z in range(hu.shape[0])]
    )
    stack = reference_generator(model.generator, inputs)
    refined = reference_refine(model.refiner, stack, WindowPlan(stack.shape[0], window, stride))
    pet = network_to_pet(grid.from_model(refined), cfg).numpy()
    pet[~body] = 0.0
    return pet


class ReferenceGanStep:
    """A stage-1 step as RegGAN's trainer takes it: batch 1, float32, separate Adam for G, R
    and D; G and R step from one backward pass of 20·L1(warp) + 10·smooth + 1·LSGAN, then D."""

    def __init__(self, config: ModelConfig) -> None:
        self.g = Generator(config.generator)
        self.r = RegistrationNet(config.registration)
        self.d = Discriminator(config.discriminator)
        self.opt_g, self.opt_r, self.opt_d = (
            torch.optim.Adam(n.parameters(), lr=1e-4, betas=(0.5, 0.999)) for n in (self.g, self.r, self.d)
        )

    def __call__(self, ct: torch.Tensor, pet: torch.Tensor) -> None:
        """One step on a (1, 1, M, M) CT and PET pair, both on [-1, 1]."""
        self.opt_g.zero_grad()
        self.opt_r.zero_grad()
        fake = self.g(ct)
        field_ = self.r(fake, pet)
        scores = self.d(fake)
        loss = 20 * F.l1_loss(warp(fake, field_), pet) + 10 * smoothness_loss(field_)
        loss = loss + F.mse_loss(scores, torch.ones_like(scores))
        loss.backward()
        self.opt_g.step()
        self.opt_r.step()
        self.opt_d.zero_grad()
        real, fake_scores = self.d(pet), self.d(fake.detach())
        d_loss = F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake_scores, torch.zeros_like(fake_scores))
        d_loss.backward()
        self.opt_d.step()


class ReferenceRefinerStep:
    """A stage-2 step as a plain loop: G frozen, run one slice at a time; one window per step;
    L1 of F(window) to the (misaligned) PET window; Adam."""

    def __init__(self, model: LoadedModel) -> None:
        assert model.refiner is not None
        self.g, self.f = model.generator, model.refiner
        self.opt = torch.optim.Adam(self.f.parameters(), lr=1e-4, betas=(0.5, 0.999))

    def __call__(self, ct: torch.Tensor, pet: torch.Tensor) -> None:
        """One step on an (s, M, M) CT window and its PET window, both on [-1, 1]."""
        stacked = reference_generator(self.g, ct)
        self.opt.zero_grad()
        loss = F.l1_loss(self.f(stacked[None, None]), pet[None, None])
        loss.backward()
        self.opt.step()
