"""Discriminator D: PatchGAN on PET slices (N, 1, H, W) in [-1, 1] -> score map."""

from __future__ import annotations

from torch import nn

from ..config import DiscriminatorConfig
from .blocks import InstanceNorm, init_normal


class Discriminator(nn.Sequential):
    """RegGAN's unconditional discriminator (docs/method.md §2).

    conv4 stride 2 1 -> C + LReLU(0.2); ``n_layers - 1`` more stride-2 conv4 doubling
    the width with IN + LReLU; one stride-1 conv4 doubling again with IN + LReLU; conv4
    -> 1. Returns the patch score map (N, 1, h, w); the loss decides how to average it.
    """

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        c = cfg.base_channels
        layers: list[nn.Module] = [nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        for stride in [2] * (cfg.n_layers - 1) + [1]:
            layers += [
                nn.Conv2d(c, 2 * c, 4, stride=stride, padding=1),
                InstanceNorm(2 * c),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 4, padding=1))
        super().__init__(*layers)
        init_normal(self)
