"""Small composable building blocks shared by the networks (MONAI-style)."""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock2d(nn.Sequential):
    """``x + [reflect-pad, conv3, IN, ReLU, reflect-pad, conv3, IN](x)`` at constant width.

    The block of the CycleGAN/RegGAN generator, reused in the registration U-Net.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def conv_norm_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """3×3 convolution (zero padding 1) + InstanceNorm + ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DoubleConv3d(nn.Sequential):
    """Two [conv3×3×3, InstanceNorm (affine), LeakyReLU(0.01)] layers, the 3D U-Net unit."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """RegGAN/CycleGAN initialisation: conv weights N(0, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
