"""Metrics against scikit-image and hand computations on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from RegC2PLib.metrics import paper_metrics, psnr_slices, ssim_slices, suv_metrics


def _pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    z, y, x = np.meshgrid(np.arange(3), np.arange(20), np.arange(31), indexing="ij")
    structured = 0.5 + 0.3 * np.sin(x / 4.0 + z) * np.cos(y / 3.0)
    blocks = ((x // 8 + y // 5) % 2).astype(float) * 0.8 + 0.1
    return [
        ("random", rng.random((3, 20, 31)), rng.random((3, 20, 31))),
        ("noisy", structured, np.clip(structured + rng.normal(0, 0.05, structured.shape), 0, 1)),
        ("shifted", structured, np.roll(structured, 2, axis=2)),
        ("blocks", blocks, ndimage.uniform_filter(blocks, size=(1, 3, 3))),
        ("constant_vs_ramp", np.full((2, 9, 12), 0.4), np.broadcast_to(np.linspace(0, 1, 12), (2, 9, 12)).copy()),
        ("identical", structured, structured.copy()),
    ]


@pytest.mark.parametrize(("name", "pred", "gt"), _pairs(), ids=[p[0] for p in _pairs()])
def test_ssim_matches_skimage(name: str, pred: np.ndarray, gt: np.ndarray) -> None:
    ours = ssim_slices(pred, gt)
    reference = [structural_similarity(gt[i], pred[i], data_range=1.0) for i in range(len(gt))]
    assert ours.shape == (len(gt),)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


def test_ssim_accepts_float32_and_tensors() -> None:
    import torch

    pred, gt = _pairs()[1][1:]
    ours = ssim_slices(torch.from_numpy(pred.astype(np.float32)), gt.astype(np.float32))
    reference = [structural_similarity(gt[i], pred[i], data_range=1.0) for i in range(len(gt))]
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("name", "pred", "gt"), _pairs()[:-1], ids=[p[0] for p in _pairs()[:-1]])
def test_psnr_matches_skimage(name: str, pred: np.ndarray, gt: np.ndarray) -> None:
    ours = psnr_slices(pred, gt)
    reference = [peak_signal_noise_ratio(gt[i], pred[i], data_range=1.0) for i in range(len(gt))]
    np.testing.assert_allclose(ours, reference, rtol=1e-10)


def test_psnr_infinite_for_exact_slice() -> None:
    gt = np.random.default_rng(0).random((2, 8, 8))
    pred = gt.copy()
    pred[1] += 0.1
    psnr = psnr_slices(pred, gt)
    assert math.isinf(psnr[0]) and psnr[1] == pytest.approx(20.0)


def test_paper_metrics_constant_offset() -> None:
    """+0.02 on the network scale is +0.01 on the paper's [0, 1] scale:
    MAE = 32767 · 0.01 and PSNR = 10·log10(1 / 0.01²) = 40 dB on every slice."""
    rng = np.random.default_rng(3)
    gt = rng.uniform(-1.0, 0.9, (4, 16, 20))
    pred = gt + 0.02
    m = paper_metrics(pred, gt)
    assert m.mae == pytest.approx(327.67, rel=1e-9)
    assert m.psnr == pytest.approx(40.0, rel=1e-9)
    p01, g01 = (pred + 1) / 2, (gt + 1) / 2
    ssim = np.mean([structural_similarity(g01[i], p01[i], data_range=1.0) for i in range(4)])
    assert m.ssim == pytest.approx(ssim, abs=1e-4)
    assert m.n_slices == 4 and m.n_exact_slices == 0


def test_paper_metrics_hand_made_mean_over_slices() -> None:
    """Slice means, then the mean over slices; an exact slice is left out of PSNR only."""
    gt = np.zeros((3, 10, 10))  # paper scale 0.5 everywhere
    pred = gt.copy()
    pred[0, :5] = 0.2  # half the slice off by 0.1 on paper scale -> mean |d| = 0.05
    pred[1] = -0.4  # whole slice off by 0.2 on paper scale
    m = paper_metrics(pred, gt)
    assert m.mae == pytest.approx(32767 * (0.05 + 0.2 + 0.0) / 3, rel=1e-9)
    psnr0 = 10 * math.log10(1 / (0.5 * 0.1**2))
    psnr1 = 10 * math.log10(1 / 0.2**2)
    assert m.psnr == pytest.approx((psnr0 + psnr1) / 2, rel=1e-9)
    assert m.n_exact_slices == 1


def test_paper_metrics_on_paper_table_scale() -> None:
    """MAE 302.43 (the paper's best) corresponds to about 0.0185 on the network scale."""
    gt = np.zeros((1, 8, 8))
    m = paper_metrics(gt + 2 * 302.43 / 32767, gt)
    assert m.mae == pytest.approx(302.43, rel=1e-9)
    assert pytest.approx(0.0185, abs=1e-4) == 2 * 302.43 / 32767


# --------------------------------------------------------------------------- body mask


# --------------------------------------------------------------------------- SUV metrics


def test_suv_metrics_hand_made() -> None:
    gt = np.zeros((4, 6, 6))
    gt[:, 1:5, 1:5] = 2.0
    body = np.zeros(gt.shape, dtype=bool)
    body[:, 1:5, 1:5] = True  # 4 slices × 16 voxels
    pred = gt.copy()
    pred[:, 1:3, 1:5] += 0.5  # half the body voxels +0.5
    pred[:, 3:5, 1:5] -= 0.25  # the other half -0.25
    pred[:, 0, 0] = 50.0  # outside the body: ignored
    m = suv_metrics(pred, gt, body)
    assert m.mae_body == pytest.approx((0.5 + 0.25) / 2)
    assert m.bias_body == pytest.approx((0.5 - 0.25) / 2)
    assert m.interslice == pytest.approx(0.0)  # the error is the same on every slice
    assert math.isnan(m.lesion_suvmax_error) and m.n_lesions == 0


def test_suv_metrics_lesions() -> None:
    gt = np.ones((3, 10, 10))
    pred = np.ones((3, 10, 10))
    lesions = np.zeros((3, 10, 10), dtype=np.uint8)
    lesions[1, 1:4, 1:4] = 1
    lesions[0:2, 6:9, 6:9] = 2
    gt[1, 2, 2], pred[1, 1, 3] = 10.0, 8.0  # lesion 1: SUVmax 10 -> 8 (error -2)
    gt[0, 7, 7], pred[1, 6, 8] = 5.0, 6.0  # lesion 2: SUVmax 5 -> 6 (error +1)
    pred[2, 5, 5] = 30.0  # outside every lesion
    m = suv_metrics(pred, gt, np.ones(gt.shape, dtype=bool), lesions)
    assert m.n_lesions == 2
    assert m.lesion_suvmax_error == pytest.approx(1.5)
    assert m.lesion_suvmax_bias == pytest.approx(-0.5)


def test_suv_metrics_interslice_on_z_ramp() -> None:
    """pred − gt = 0.3·z: |∂z| = 0.3 wherever two consecutive slices are both in the body."""
    nz = 6
    gt = np.random.default_rng(1).random((nz, 5, 7))
    pred = gt + 0.3 * np.arange(nz).reshape(nz, 1, 1)
    body = np.ones(gt.shape, dtype=bool)
    body[:, 0, :] = False
    m = suv_metrics(pred, gt, body)
    assert m.interslice == pytest.approx(0.3)
    assert m.bias_body == pytest.approx(0.3 * np.mean(np.arange(nz)))
    # A second error pattern that flips sign every slice doubles the step.
    pred_alt = gt + 0.3 * (np.arange(nz) % 2).reshape(nz, 1, 1)
    assert suv_metrics(pred_alt, gt, body).interslice == pytest.approx(0.3)
    pred_zigzag = gt + 0.3 * ((-1.0) ** np.arange(nz)).reshape(nz, 1, 1)
    assert suv_metrics(pred_zigzag, gt, body).interslice == pytest.approx(0.6)


def test_suv_metrics_interslice_only_where_both_slices_in_body() -> None:
    """A step between a body voxel and a voxel outside the body does not count."""
    nz = 5
    gt = np.zeros((nz, 4, 6))
    pred = gt + 0.3 * np.arange(nz).reshape(nz, 1, 1)
    body = np.ones(gt.shape, dtype=bool)
    body[2, :, :3] = False
    pred[2, :, :3] += 100.0  # outside the body on slice 2 only
    m = suv_metrics(pred, gt, body)
    assert m.interslice == pytest.approx(0.3)
    assert m.mae_body == pytest.approx(np.mean(0.3 * np.arange(nz).reshape(nz, 1, 1) * np.ones(gt.shape), where=body))
