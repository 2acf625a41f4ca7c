"""Generator G: one axial CT slice -> one PET slice, both (N, 1, H, W) in [-1, 1]."""

from __future__ import annotations

from torch import nn

from ..config import GeneratorConfig
from .blocks import InstanceNorm, ResidualBlock2d, conv_norm_relu, init_normal


class Generator(nn.Sequential):
    """CycleGAN-style ResNet generator exactly as in RegGAN (docs/method.md §2).

    reflect-pad 3, conv7 -> C, IN, ReLU; ``n_downsampling`` stride-2 conv3 doubling the
    width; ``n_residual_blocks`` residual blocks; as many transposed conv3 (stride 2,
    output_padding 1) halving it; reflect-pad 3, conv7 -> 1, tanh. H and W must be
    divisible by ``2**n_downsampling``.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        c = cfg.base_channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(1, c, 7), InstanceNorm(c), nn.ReLU(inplace=True)]
        for _ in range(cfg.n_downsampling):
            layers += conv_norm_relu(c, 2 * c, stride=2)
            c *= 2
        layers += [ResidualBlock2d(c) for _ in range(cfg.n_residual_blocks)]
        for _ in range(cfg.n_downsampling):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                InstanceNorm(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 1, 7), nn.Tanh()]
        super().__init__(*layers)
        init_normal(self)
