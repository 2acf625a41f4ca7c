"""In-plane map between a volume's slices and the model's square grid."""

from __future__ import annotations

import math

import pytest
import torch

from RegC2PLib.slice_grid import SliceGrid


def _smooth(n: int, ny: int, nx: int) -> torch.Tensor:
    """Smooth slices (a few low-frequency waves), values in about [-1, 1]."""
    y = torch.linspace(0, 1, ny).view(1, ny, 1)
    x = torch.linspace(0, 1, nx).view(1, 1, nx)
    k = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1)
    return 0.5 * torch.sin(math.pi * (y + k * 0.1)) * torch.cos(1.5 * math.pi * x) + 0.3 * y - 0.2 * x


@pytest.mark.parametrize(
    ("in_shape", "spacing", "size"),
    [
        ((512, 400), (0.8, 1.0), 128),
        ((400, 512), (1.0, 0.8), 128),
        ((512, 512), (0.7, 0.7), 256),
        ((40, 48), (0.8, 0.9), 128),
        ((48, 10), (2.5, 0.9), 128),  # a sagittal volume seen axially: very elongated
        ((300, 100), (1.0, 1.0), 64),
    ],
)
def test_fit_keeps_aspect_ratio(in_shape: tuple[int, int], spacing: tuple[float, float], size: int) -> None:
    grid = SliceGrid.fit(in_shape, spacing, size)
    ry, rx = grid.resized_shape
    top, bottom, left, right = grid.pad
    assert grid.in_shape == in_shape and grid.size == size
    assert top + ry + bottom == size and left + rx + right == size
    assert min(grid.pad) >= 0
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1  # centred
    extent_y, extent_x = in_shape[0] * spacing[0], in_shape[1] * spacing[1]
    assert max(ry, rx) == size  # the longer physical side fills the grid
    pixel = max(extent_y, extent_x) / size  # square model pixels
    assert abs(ry - extent_y / pixel) <= 0.5 + 1e-9
    assert abs(rx - extent_x / pixel) <= 0.5 + 1e-9


def test_fit_hand_example() -> None:
    """512×400 pixels at 0.8×1.0 mm is 409.6×400 mm: 3.2 mm model pixels, 128×125."""
    grid = SliceGrid.fit((512, 400), (0.8, 1.0), 128)
    assert grid.resized_shape == (128, 125)
    assert grid.pad == (0, 0, 1, 2)


def test_identity_for_square_model_sized_slices() -> None:
    grid = SliceGrid.fit((128, 128), (0.9, 0.9), 128)
    assert grid.resized_shape == (128, 128) and grid.pad == (0, 0, 0, 0)
    x = torch.rand(3, 128, 128)
    assert torch.equal(grid.to_model(x), x)
    assert torch.equal(grid.from_model(x), x)


@pytest.mark.parametrize(
    ("in_shape", "spacing", "size", "tol"),
    [
        ((512, 400), (0.8, 1.0), 128, 0.02),  # downsampling 4x
        ((40, 48), (0.8, 0.9), 128, 0.01),  # upsampling
        ((100, 60), (1.0, 2.0), 128, 0.01),
    ],
)
def test_round_trip_of_smooth_image(in_shape: tuple[int, int], spacing: tuple[float, float], size: int, tol: float) -> None:
    grid = SliceGrid.fit(in_shape, spacing, size)
    x = _smooth(2, *in_shape)
    on_model = grid.to_model(x)
    assert on_model.shape == (2, size, size)
    back = grid.from_model(on_model)
    assert back.shape == x.shape
    assert float((back - x).abs().max()) < tol


def test_padding_uses_fill_and_content_keeps_its_place() -> None:
    """A slice wider than tall: padding above and below, left half stays on the left."""
    grid = SliceGrid.fit((20, 80), (1.0, 1.0), 64)
    top, bottom, left, right = grid.pad
    assert (left, right) == (0, 0) and top + bottom == 64 - 16
    x = torch.zeros(1, 20, 80)
    x[:, :, :40] = 1.0  # left half bright
    m = grid.to_model(x, fill=-3.0)
    assert torch.all(m[:, :top] == -3.0) and torch.all(m[:, 64 - bottom :] == -3.0)
    content = m[:, top : 64 - bottom]
    assert float(content[:, :, :30].min()) > 0.99 and float(content[:, :, 34:].max()) < 0.01
    # From the model grid the padding is cropped away: a marker in the padding is lost.
    m[:, :top] = 1000.0
    assert float(grid.from_model(m).max()) <= 1.0 + 1e-6


def test_label_maps_keep_their_labels_and_places() -> None:
    """Nearest neighbour: no blended label values; each label keeps its area (scaled) and centre."""
    grid = SliceGrid.fit((60, 90), (1.0, 1.0), 45)  # 90 mm wide onto 45 px: 2 mm pixels
    labels = torch.zeros(1, 60, 90)
    labels[0, 10:20, 10:30] = 3.0  # 10 x 20 px
    labels[0, 40:50, 60:80] = 7.0
    m = grid.to_model(labels, fill=0.0, labels=True)
    top = grid.pad[0]
    assert set(m.unique().tolist()) == {0.0, 3.0, 7.0}
    for value, (y0, x0) in ((3.0, (15.0, 20.0)), (7.0, (45.0, 70.0))):  # centres in mm from the corner
        ys, xs = torch.nonzero(m[0] == value, as_tuple=True)
        assert len(ys) == 5 * 10  # 10 x 20 px at 1 mm -> 5 x 10 px at 2 mm
        # model pixel j covers [2j, 2j + 2) mm: its centre is at 2j + 1 mm
        assert float(ys.float().mean()) == pytest.approx((y0 - 1.0) / 2 + top, abs=0.01)
        assert float(xs.float().mean()) == pytest.approx((x0 - 1.0) / 2, abs=0.01)
