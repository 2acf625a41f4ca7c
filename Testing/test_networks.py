"""The four networks, the warp and the smoothness loss, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from RegC2PLib.config import preset
from RegC2PLib.networks import Discriminator, Generator, Refiner, RegistrationNet, smoothness_loss, warp
from RegC2PLib.networks.blocks import InstanceNorm

PRESETS = ("small", "paper")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def _patchgan_side(side: int, n_layers: int) -> int:
    """Output side of the PatchGAN for an input side: conv4/pad1 gives floor((s + 2 - 4) / stride) + 1."""
    for stride in [2] * n_layers + [1, 1]:
        side = (side + 2 - 4) // stride + 1
    return side


# --------------------------------------------------------------------------- instance norm


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 6),
    space=st.lists(st.integers(2, 40), min_size=2, max_size=3),
    offset=st.sampled_from([0.0, 1.0, -30.0, 10.0]),
    spread=st.sampled_from([1.0, 0.01]),
    affine=st.booleans(),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_instance_norm_matches_torch_instance_norm(
    batch: int, channels: int, space: list[int], offset: float, spread: float, affine: bool, channels_last: bool, seed: int
) -> None:
    """The networks' instance norm equals F.instance_norm computed in float64, with its affine
    parameters, in both memory formats — also for channels whose mean is far from their spread,
    where a one-pass variance would lose every digit."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *space, generator=gen) * spread + offset
    norm = InstanceNorm(channels, affine=affine)
    weight = bias = None
    if affine:
        weight, bias = torch.randn(channels, generator=gen), torch.randn(channels, generator=gen)
        norm.load_state_dict({"weight": weight, "bias": bias})
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if len(space) == 2 else torch.channels_last_3d)
    with torch.no_grad():
        ours = norm(x)
    double = (p.double() if p is not None else None for p in (weight, bias))
    reference = F.instance_norm(x.double().contiguous(), *[None, None], *double, eps=1e-5).float()
    torch.testing.assert_close(ours.contiguous(), reference, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", PRESETS)
def test_generator_shape_and_range(name: str) -> None:
    g = Generator(preset(name).generator).eval()
    x = torch.rand(2, 1, 64, 48) * 2 - 1
    with torch.no_grad():
        y = g(x * 50)  # far outside [-1, 1]: tanh must still bound the output
    assert y.shape == (2, 1, 64, 48)
    assert y.dtype == torch.float32
    assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0
    assert float(y.std()) > 0  # not a constant


def test_paper_generator_parameter_count() -> None:
    """RegGAN's ResNet generator with 1 input and 1 output channel (no affine IN)."""
    expected = (
        _conv_params(1, 64, 7)
        + _conv_params(64, 128, 3)
        + _conv_params(128, 256, 3)
        + 9 * 2 * _conv_params(256, 256, 3)
        + _conv_params(256, 128, 3)
        + _conv_params(128, 64, 3)
        + _conv_params(64, 1, 7)
    )
    assert _n_params(Generator(preset("paper").generator)) == expected


def test_small_generator_parameter_count() -> None:
    expected = (
        _conv_params(1, 16, 7)
        + _conv_params(16, 32, 3)
        + _conv_params(32, 64, 3)
        + 6 * 2 * _conv_params(64, 64, 3)
        + _conv_params(64, 32, 3)
        + _conv_params(32, 16, 3)
        + _conv_params(16, 1, 7)
    )
    assert _n_params(Generator(preset("small").generator)) == expected


def test_paper_generator_flops() -> None:
    """About 97 GFLOP per 256×256 slice (docs/method.md §2), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        g = Generator(preset("paper").generator)
        x = torch.empty(1, 1, 256, 256)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        g(x)
    total = counter.get_total_flops()

    def conv(c_in: int, c_out: int, k: int, side: int) -> int:  # 2·MACs at ``side``² positions
        return 2 * c_in * c_out * k * k * side * side

    hand = (
        conv(1, 64, 7, 256)
        + conv(64, 128, 3, 128)
        + conv(128, 256, 3, 64)
        + 18 * conv(256, 256, 3, 64)
        + conv(256, 128, 3, 64)  # transposed conv: MACs counted at its input positions
        + conv(128, 64, 3, 128)
        + conv(64, 1, 7, 256)
    )
    assert total == pytest.approx(hand, rel=0.01)
    assert total / 1e9 == pytest.approx(97.0, abs=1.5)


@pytest.mark.parametrize(("name", "side"), [("small", 64), ("paper", 256)])
def test_registration_shapes(name: str, side: int) -> None:
    # paper R pools 7 times: its bottleneck needs slices larger than 2**7 = 128 pixels
    r = RegistrationNet(preset(name).registration).eval()
    with torch.no_grad():
        field = r(torch.rand(1, 1, side, side), torch.rand(1, 1, side, side))
    assert field.shape == (1, 2, side, side)


def test_registration_odd_shape() -> None:
    """Sizes that are not powers of two: pooling rounds up, upsampling follows the skip."""
    r = RegistrationNet(preset("small").registration).eval()
    with torch.no_grad():
        field = r(torch.rand(1, 1, 50, 38), torch.rand(1, 1, 50, 38))
    assert field.shape == (1, 2, 50, 38)


@pytest.mark.parametrize("name", PRESETS)
def test_discriminator_shape(name: str) -> None:
    cfg = preset(name).discriminator
    d = Discriminator(cfg).eval()
    with torch.no_grad():
        score = d(torch.rand(3, 1, 64, 80))
    assert score.shape == (3, 1, _patchgan_side(64, cfg.n_layers), _patchgan_side(80, cfg.n_layers))


def test_discriminator_paper_patch_map_is_30x30_at_256() -> None:
    """The classic 70×70 PatchGAN gives a 30×30 score map for a 256×256 image."""
    assert _patchgan_side(256, preset("paper").discriminator.n_layers) == 30
    d = Discriminator(preset("small").discriminator)  # same layout, fewer channels
    with torch.no_grad():
        assert d(torch.rand(1, 1, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("depth", [1, 3, 8])
def test_refiner_shape_and_fresh_identity(name: str, depth: int) -> None:
    f = Refiner(preset(name).refiner).eval()
    x = torch.rand(2, 1, depth, 32, 24) * 2 - 1
    with torch.no_grad():
        y = f(x)
    assert y.shape == x.shape
    assert torch.equal(y, x)  # the last layer starts at zero: exactly the identity


def test_refiner_not_identity_after_training_step() -> None:
    """The identity comes from the zero last layer, not from ignoring the network."""
    f = Refiner(preset("small").refiner)
    x = torch.rand(1, 1, 4, 16, 16)
    loss = (f(x) - x.flip(-1)).abs().mean()
    loss.backward()
    with torch.no_grad():
        for p in f.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
        assert not torch.equal(f.eval()(x), x)


# --------------------------------------------------------------------------- warp


def _uniform_field(n: int, h: int, w: int, dy: float, dx: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    field = torch.empty(n, 2, h, w, dtype=dtype)
    field[:, 0] = dy
    field[:, 1] = dx
    return field


@pytest.mark.parametrize(("dy", "dx"), [(3, -2), (-1, 4), (0, 1)])
def test_warp_integer_shift_moves_image(dy: int, dx: int) -> None:
    """warp samples at p + u: out[i, j] = img[i + dy, j + dx] wherever that lies inside."""
    h, w = 23, 31  # not square, so x and y cannot be swapped unnoticed
    img = torch.rand(2, 3, h, w, dtype=torch.float64)
    out = warp(img, _uniform_field(2, h, w, dy, dx))
    rows_out = slice(max(0, -dy), min(h, h - dy))
    cols_out = slice(max(0, -dx), min(w, w - dx))
    rows_in = slice(max(0, dy), min(h, h + dy))
    cols_in = slice(max(0, dx), min(w, w + dx))
    torch.testing.assert_close(out[..., rows_out, cols_out], img[..., rows_in, cols_in], atol=1e-12, rtol=0)
    # Same thing with numpy's roll on the interior.
    rolled = np.roll(img.numpy(), shift=(-dy, -dx), axis=(2, 3))
    np.testing.assert_allclose(out.numpy()[..., rows_out, cols_out], rolled[..., rows_out, cols_out], atol=1e-12)


def test_warp_float32_integer_shift() -> None:
    h, w = 40, 33
    img = torch.rand(1, 1, h, w)
    out = warp(img, _uniform_field(1, h, w, 3, -2, torch.float32))
    torch.testing.assert_close(out[..., : h - 3, 2:], img[..., 3:, : w - 2], atol=1e-5, rtol=0)


def test_warp_border_padding_repeats_edge() -> None:
    """Samples outside the image take the nearest edge value (padding_mode='border')."""
    h, w = 12, 15
    img = torch.rand(1, 1, h, w, dtype=torch.float64)
    out = warp(img, _uniform_field(1, h, w, 3, -2))
    # bottom rows sample beyond the last row -> the last row, shifted in x
    for i in range(h - 3, h):
        torch.testing.assert_close(out[0, 0, i, 2:], img[0, 0, h - 1, : w - 2], atol=1e-12, rtol=0)
    # left columns sample left of column 0 -> column 0
    for j in range(2):
        torch.testing.assert_close(out[0, 0, : h - 3, j], img[0, 0, 3:, 0], atol=1e-12, rtol=0)
    # a huge displacement lands on the corner
    far = warp(img, _uniform_field(1, h, w, 1000, -1000))
    torch.testing.assert_close(far, torch.full_like(far, float(img[0, 0, h - 1, 0])), atol=1e-12, rtol=0)


def test_warp_subpixel_shift_of_ramp_is_exact() -> None:
    """Bilinear interpolation reproduces a linear function exactly."""
    h, w = 20, 27
    a, b, c = 0.7, -1.3, 5.0
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (a * ii + b * jj + c)[None, None]
    dy, dx = 0.3, -0.7
    out = warp(ramp, _uniform_field(1, h, w, dy, dx))
    expected = a * (ii + dy) + b * (jj + dx) + c
    # the last row samples y = h - 0.7 and column 0 samples x = -0.7: both outside (border)
    torch.testing.assert_close(out[0, 0, :-1, 1:], expected[:-1, 1:], atol=1e-10, rtol=0)


def test_warp_varying_field_on_ramp() -> None:
    """A spatially varying field: out(p) = ramp(p + u(p)) wherever p + u(p) stays inside."""
    h, w = 17, 19
    gen = torch.Generator().manual_seed(5)
    ii, jj = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ramp = (2.0 * ii - 0.5 * jj)[None, None]
    field = torch.rand(1, 2, h, w, generator=gen, dtype=torch.float64) * 3 - 1.5
    out = warp(ramp, field)
    y, x = ii + field[0, 0], jj + field[0, 1]
    inside = (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)
    expected = 2.0 * y - 0.5 * x
    torch.testing.assert_close(out[0, 0][inside], expected[inside], atol=1e-10, rtol=0)
    assert inside.float().mean() > 0.6


def test_warp_zero_field_is_identity() -> None:
    img = torch.rand(3, 2, 37, 53, dtype=torch.float64)
    torch.testing.assert_close(warp(img, torch.zeros(3, 2, 37, 53, dtype=torch.float64)), img, atol=1e-12, rtol=0)
    img32 = torch.rand(2, 1, 256, 256)
    torch.testing.assert_close(warp(img32, torch.zeros(2, 2, 256, 256)), img32, atol=1e-4, rtol=0)


def test_fresh_registration_net_is_near_identity() -> None:
    r = RegistrationNet(preset("small").registration).eval()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    y = torch.roll(x, 5, dims=-1)
    with torch.no_grad():
        field = r(x, y)
        warped = warp(x, field)
    assert float(field.abs().max()) < 1e-2
    torch.testing.assert_close(warped, x, atol=1e-2, rtol=0)


def test_registration_field_learns_a_shift() -> None:
    """Gradients reach the field: a few steps on L_corr move the field off zero."""
    r = RegistrationNet(preset("small").registration)
    ii, jj = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    moving = torch.exp(-((ii - 32) ** 2 + (jj - 32) ** 2) / 80.0)[None, None]
    fixed = torch.exp(-((ii - 32) ** 2 + (jj - 35) ** 2) / 80.0)[None, None]
    optimiser = torch.optim.Adam(r.parameters(), lr=1e-3)
    before = (warp(moving, r(moving, fixed)) - fixed).abs().mean().item()
    for _ in range(5):
        optimiser.zero_grad()
        loss = (warp(moving, r(moving, fixed)) - fixed).abs().mean()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        field = r(moving, fixed)
        after = (warp(moving, field) - fixed).abs().mean().item()
    assert float(field.abs().max()) > 1e-2
    assert after < before


# --------------------------------------------------------------------------- smoothness


def test_smoothness_loss_matches_hand_computation() -> None:
    gen = torch.Generator().manual_seed(3)
    field = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64)
    f = field.numpy()
    n, c, h, w = f.shape
    sum_dy = sum(
        (f[a, b, i + 1, j] - f[a, b, i, j]) ** 2 for a in range(n) for b in range(c) for i in range(h - 1) for j in range(w)
    )
    sum_dx = sum(
        (f[a, b, i, j + 1] - f[a, b, i, j]) ** 2 for a in range(n) for b in range(c) for i in range(h) for j in range(w - 1)
    )
    expected = sum_dy / (n * c * (h - 1) * w) + sum_dx / (n * c * h * (w - 1))
    assert float(smoothness_loss(field)) == pytest.approx(expected, rel=1e-12)


def test_smoothness_loss_of_linear_field() -> None:
    """u_y = a·x, u_x = b·y: ∂x of channel 0 is a, ∂y of channel 1 is b, all else 0."""
    a, b = 0.3, -0.8
    ii, jj = torch.meshgrid(torch.arange(9.0, dtype=torch.float64), torch.arange(7.0, dtype=torch.float64), indexing="ij")
    field = torch.stack([a * jj, b * ii])[None]
    assert float(smoothness_loss(field)) == pytest.approx((a * a + b * b) / 2, rel=1e-12)


def test_smoothness_loss_zero_for_constant_field() -> None:
    field = _uniform_field(2, 8, 9, 2.5, -1.25)
    assert float(smoothness_loss(field)) == 0.0
