"""Refiner F: a light residual 3D U-Net over windows of consecutive PET slices.

Input and output (N, 1, s, H, W) on the network scale [-1, 1]. Pooling and
upsampling are in-plane only (1, 2, 2): slice spacing is usually coarser than pixel
spacing and any window length ``s`` works. The last convolution starts at zero, so a
new refiner is exactly the identity and training learns a correction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RefinerConfig
from .blocks import DoubleConv3d


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig) -> None:
        super().__init__()
        chans = cfg.channels
        self.encoder = nn.ModuleList(DoubleConv3d(c_in, c_out) for c_in, c_out in zip((1, *chans[:-1]), chans))
        self.decoder = nn.ModuleList(DoubleConv3d(deep + skip, skip) for deep, skip in zip(chans[:0:-1], chans[-2::-1]))
        self.out = nn.Conv3d(chans[0], 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            if i:
                h = F.max_pool3d(h, (1, 2, 2))
            h = block(h)
            skips.append(h)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[-3:], mode="trilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1))
        return x + self.out(h)
