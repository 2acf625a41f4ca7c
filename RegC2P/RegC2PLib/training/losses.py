"""Losses: LSGAN adversarial terms and the registration-corrected reconstruction term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lsgan(scores: torch.Tensor, real: bool, per_image: bool) -> torch.Tensor:
    """Least-squares GAN loss of D's score map (N, 1, h, w) against 1 (real) or 0 (fake).

    ``per_image``: average the map to one score per image first (RegGAN); otherwise
    every patch score is a separate term (pix2pix's PatchGAN).
    """
    if per_image:
        scores = scores.mean(dim=(1, 2, 3))
    target = torch.ones_like(scores) if real else torch.zeros_like(scores)
    return F.mse_loss(scores, target)
