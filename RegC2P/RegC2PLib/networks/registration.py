"""Registration network R, the spatial transformer (warp) and the smoothness loss.

R sees ``cat(G(x), ỹ)`` (N, 2, H, W) and predicts a displacement field (N, 2, H, W)
in pixels, channel 0 along y (rows) and channel 1 along x (columns). ``warp(image,
field)`` samples ``image`` at ``p + field(p)``, so warping G(x) by R's field brings it
onto the misaligned target ỹ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RegistrationConfig
from .blocks import ResidualBlock2d


def _conv_lrelu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]


class _Down(nn.Module):
    """conv3 + LReLU + residual block; returns (2× max-pooled, skip taken before pooling)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_lrelu(in_channels, out_channels), ResidualBlock2d(out_channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.body(x)
        return F.max_pool2d(skip, 2, ceil_mode=True), skip


class _Up(nn.Module):
    """Bilinear upsampling to the skip's size, concatenation, conv3 + LReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_lrelu(in_channels + skip_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([x, skip], dim=1))


class RegistrationNet(nn.Module):
    """RegGAN's residual U-Net (docs/method.md §2); the field starts at (almost) zero."""

    def __init__(self, cfg: RegistrationConfig) -> None:
        super().__init__()
        downs, ups = cfg.down_channels, cfg.up_channels
        self.down = nn.ModuleList(_Down(c_in, c_out) for c_in, c_out in zip((2, *downs[:-1]), downs))
        self.bottleneck = nn.Sequential(
            nn.Conv2d(downs[-1], cfg.bottleneck_channels, 1),
            nn.LeakyReLU(0.2, inplace=True),
            *(ResidualBlock2d(cfg.bottleneck_channels) for _ in range(cfg.n_bottleneck_blocks)),
            nn.Conv2d(cfg.bottleneck_channels, ups[0], 1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.up = nn.ModuleList(_Up(c_in, skip, c_out) for c_in, skip, c_out in zip((ups[0], *ups[:-1]), reversed(downs), ups))
        self.head = nn.Sequential(ResidualBlock2d(ups[-1]), nn.Conv2d(ups[-1], ups[-1], 1), nn.LeakyReLU(0.2, inplace=True))
        self.field = nn.Conv2d(ups[-1], 2, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.field.weight, 0.0, 1e-5)
        nn.init.zeros_(self.field.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) each -> displacement (N, 2, H, W) in pixels."""
        x = torch.cat([moving, fixed], dim=1)
        skips = []
        for down in self.down:
            x, skip = down(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for up, skip in zip(self.up, reversed(skips)):
            x = up(x, skip)
        return self.field(self.head(x))


def warp(image: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (N, C, H, W) at ``p + field(p)``; ``field`` (N, 2, H, W) in pixels (dy, dx).

    Bilinear, ``align_corners=True`` (pixel centres at -1 and +1), border padding: the
    spatial transformer of RegGAN.
    """
    h, w = field.shape[-2:]
    ys = torch.arange(h, device=field.device, dtype=field.dtype)
    xs = torch.arange(w, device=field.device, dtype=field.dtype)
    y = (ys.view(1, h, 1) + field[:, 0]) * (2.0 / max(h - 1, 1)) - 1.0
    x = (xs.view(1, 1, w) + field[:, 1]) * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([x, y], dim=-1)  # grid_sample wants (x, y) order
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def smoothness_loss(field: torch.Tensor) -> torch.Tensor:
    """``mean(∂u/∂y)² + mean(∂u/∂x)²`` by forward differences over the field (N, 2, H, W)."""
    dy = field[:, :, 1:, :] - field[:, :, :-1, :]
    dx = field[:, :, :, 1:] - field[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def invert_field(field: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Inverse displacement ``v`` of ``field`` ``u`` (N, 2, H, W), in pixels.

    Fixed-point iteration ``v ← −u(p + v)``, so that ``warp(warp(x, u), v) ≈ x``; it
    converges for smooth fields whose Jacobian stays invertible, as R's are.
    """
    inverse = -field
    for _ in range(iterations):
        inverse = -warp(field, inverse)
    return inverse
