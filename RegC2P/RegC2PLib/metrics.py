"""Metrics: the paper's Table 1 ("paper scale") and the physical figures a clinic needs.

Paper scale (docs/method.md §3): PET on [0, 1] (the group's stored value / 32767, here
``(x + 1) / 2`` of the network scale); per 2D slice, no body mask,
``MAE = 32767·mean|pred − gt|``, SSIM and PSNR as scikit-image computes them with
``data_range = 1`` (7×7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03,
a 3-pixel border excluded); then the mean over slices. SSIM is written here with torch
(scikit-image is a test-only dependency; a test checks agreement to 1e-4).

Physical scale: SUV MAE and bias inside a body mask, lesion SUVmax and SUVmean errors, and the
inter-slice consistency ``mean |∂z(pred − gt)|`` (SUV per slice step) that the 3D
refiner exists to lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .intensity import network_to_paper_scale

PAPER_MAE_SCALE = 32767.0
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_slices(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, data_range: float = 1.0) -> np.ndarray:
    """SSIM of each 2D slice of (z, y, x) arrays, as ``skimage.metrics.structural_similarity``."""
    x = torch.as_tensor(np.asarray(pred), dtype=torch.float64)[:, None]
    y = torch.as_tensor(np.asarray(gt), dtype=torch.float64)[:, None]
    n_points = SSIM_WINDOW**2
    cov_norm = n_points / (n_points - 1)

    def mean(t: torch.Tensor) -> torch.Tensor:  # "valid" 7×7 mean = skimage's cropped filter
        return F.avg_pool2d(t, SSIM_WINDOW, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).numpy()


def psnr_slices(pred: np.ndarray, gt: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """PSNR in dB of each slice; ``inf`` where a slice is reproduced exactly."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    mse = np.mean(diff * diff, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


@dataclass(frozen=True)
class PaperMetrics:
    """Means over slices on the paper's scale (comparable with its Table 1)."""

    mae: float
    ssim: float
    psnr: float
    n_slices: int
    n_exact_slices: int  # slices with pred == gt exactly: PSNR infinite, left out of its mean


def paper_metrics(pred: np.ndarray, gt: np.ndarray) -> PaperMetrics:
    """Paper-scale metrics for network-scale [-1, 1] volumes (z, y, x)."""
    p = network_to_paper_scale(np.asarray(pred, dtype=np.float64))
    g = network_to_paper_scale(np.asarray(gt, dtype=np.float64))
    mae = PAPER_MAE_SCALE * np.abs(p - g).mean(axis=(1, 2))
    psnr = psnr_slices(p, g)
    finite = np.isfinite(psnr)
    return PaperMetrics(
        mae=float(mae.mean()),
        ssim=float(ssim_slices(p, g).mean()),
        psnr=float(psnr[finite].mean()) if finite.any() else math.inf,
        n_slices=len(mae),
        n_exact_slices=int((~finite).sum()),
    )


@dataclass(frozen=True)
class SuvMetrics:
    """Physical-scale figures in SUV."""

    mae_body: float  # mean |pred − gt| inside the body mask
    bias_body: float  # mean (pred − gt) inside the body mask
    interslice: float  # mean |∂z(pred − gt)| inside the body mask, per slice step
    lesion_suvmax_error: float  # mean |SUVmax(pred) − SUVmax(gt)| over lesions (nan if none)
    lesion_suvmax_bias: float  # mean (SUVmax(pred) − SUVmax(gt)) over lesions (nan if none)
    lesion_suvmean_error: float  # mean |SUVmean(pred) − SUVmean(gt)| over lesions (nan if none)
    n_lesions: int


def suv_metrics(pred: np.ndarray, gt: np.ndarray, body: np.ndarray, lesions: np.ndarray | None = None) -> SuvMetrics:
    """SUV figures for (z, y, x) volumes; ``lesions`` is a label map (0 = background)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    body = np.asarray(body, dtype=bool)
    diff = pred - gt
    inside = diff[body]
    both = body[1:] & body[:-1]
    dz = np.abs(diff[1:] - diff[:-1])[both]
    errors = _lesion_errors(ndimage.maximum, pred, gt, lesions)
    mean_errors = _lesion_errors(ndimage.mean, pred, gt, lesions)
    return SuvMetrics(
        mae_body=float(np.abs(inside).mean()) if inside.size else math.nan,
        bias_body=float(inside.mean()) if inside.size else math.nan,
        interslice=float(dz.mean()) if dz.size else math.nan,
        lesion_suvmax_error=float(np.abs(errors).mean()) if errors.size else math.nan,
        lesion_suvmax_bias=float(errors.mean()) if errors.size else math.nan,
        lesion_suvmean_error=float(np.abs(mean_errors).mean()) if mean_errors.size else math.nan,
        n_lesions=int(errors.size),
    )


def _lesion_errors(statistic, pred: np.ndarray, gt: np.ndarray, lesions: np.ndarray | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``statistic`` (an ``ndimage`` reduction: maximum, mean) of pred minus that of gt, per lesion label."""
    if lesions is None:
        return np.empty(0)
    lesions = np.asarray(lesions)
    labels = np.unique(lesions[lesions > 0])
    if not labels.size:
        return np.empty(0)
    return np.asarray(statistic(pred, lesions, labels)) - np.asarray(statistic(gt, lesions, labels))
