"""Reference loops for ``benchmarks/speed.py``: the project's networks driven the way RegGAN's code drives them.

RegGAN's test script runs its generator one slice at a time in float32 under ``torch.no_grad``;
its trainer takes batch-1 float32 steps, stepping G and R from one backward pass and then D.
The refiner (not part of RegGAN) is driven the same plain way: one window per pass. These loops
are what the project's batched code paths are timed and compared against. At inference they
run :func:`regan_copy` of the networks: PyTorch's ``InstanceNorm`` layers (as RegGAN's code
has) in the contiguous layout, with the project's weights.
"""

from __future__ import annotations

import copy

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


def regan_copy(network: torch.nn.Module, dims: int) -> torch.nn.Module:
    """A copy of ``network`` as RegGAN's code builds it: every instance norm an ``nn.InstanceNorm{dims}d``
    (the project writes it as a one-channel-per-group ``GroupNorm``), contiguous float32 weights."""
    norm = {2: torch.nn.InstanceNorm2d, 3: torch.nn.InstanceNorm3d}[dims]
    twin = copy.deepcopy(network).to(memory_format=torch.contiguous_format).float()
    for parent in list(twin.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.GroupNorm) and child.num_groups == child.num_channels:
                replacement = norm(child.num_channels, eps=child.eps, affine=child.affine)
                if child.affine:
                    replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement)
    return twin.eval()


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


def reference_of(model: LoadedModel) -> LoadedModel:
    """``model`` with :func:`regan_copy` networks (the model itself is left as it is)."""
    refiner = regan_copy(model.refiner, 3) if model.refiner is not None else None
    return LoadedModel(model.config, regan_copy(model.generator, 2), refiner)  # type: ignore[arg-type]


def reference_translate(ct: sitk.Image, model: LoadedModel, window: int, stride: int | None) -> np.ndarray:
    """The whole translation as plain loops: G slice by slice, then (unless ``stride`` is None)
    the refiner window by window; ``model`` holds :func:`regan_copy` networks.

    Same pre/post-processing as ``translate_volume`` (grid centred on the body, zero outside
    it); ``ct`` (HU) must already be axial LPS. Returns the PET in SUV as a (z, y, x) float32 array.
    """
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    spacing_zyx = ct.GetSpacing()[::-1]
    body = body_mask(hu, spacing_zyx)
    grid = SliceGrid.for_model(hu.shape[1:], spacing_zyx[1:], model.config, in_plane_box(body))
    cfg = model.config.intensity
    inputs = torch.cat(
        [grid.to_model(ct_to_network(torch.from_numpy(hu[z : z + 1]), cfg), fill=-1.0) for z in range(hu.shape[0])]
    )
    stack = reference_generator(model.generator, inputs)
    if stride is not None:
        assert model.refiner is not None
        stack = reference_refine(model.refiner, stack, WindowPlan(stack.shape[0], window, stride))
    pet = network_to_pet(grid.from_model(stack), cfg).numpy()
    pet[~body] = 0.0
    return pet


class ReferenceGanStep:
    """A stage-1 step as RegGAN's trainer takes it: batch 1, float32, separate Adam for G, R
    and D; G and R step from one backward pass of 20·L1(warp) + 10·smooth + 1·LSGAN, then D."""

    def __init__(self, config: ModelConfig) -> None:
        self.g = regan_copy(Generator(config.generator), 2).train()
        self.r = regan_copy(RegistrationNet(config.registration), 2).train()
        self.d = regan_copy(Discriminator(config.discriminator), 2).train()
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
        reference = reference_of(model)
        assert reference.refiner is not None
        self.g, self.f = reference.generator, reference.refiner.train()
        self.opt = torch.optim.Adam(self.f.parameters(), lr=1e-4, betas=(0.5, 0.999))

    def __call__(self, ct: torch.Tensor, pet: torch.Tensor) -> None:
        """One step on an (s, M, M) CT window and its PET window, both on [-1, 1]."""
        stacked = reference_generator(self.g, ct)
        self.opt.zero_grad()
        loss = F.l1_loss(self.f(stacked[None, None]), pet[None, None])
        loss.backward()
        self.opt.step()
