"""In-plane map between a volume's slices and the model grid at a fixed physical pixel size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from RegC2PLib.config import preset
from RegC2PLib.slice_grid import MARGIN_PX, SliceGrid


def _smooth(n: int, ny: int, nx: int) -> torch.Tensor:
    """Smooth slices (a few low-frequency waves), values in about [-1, 1]."""
    y = torch.linspace(0, 1, ny).view(1, ny, 1)
    x = torch.linspace(0, 1, nx).view(1, 1, nx)
    k = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1)
    return 0.5 * torch.sin(math.pi * (y + k * 0.1)) * torch.cos(1.5 * math.pi * x) + 0.3 * y - 0.2 * x


@pytest.mark.parametrize(
    ("in_shape", "spacing"),
    [
        ((512, 400), (0.8, 1.0)),
        ((400, 512), (1.0, 0.8)),
        ((40, 48), (0.8, 0.9)),
        ((48, 10), (2.5, 0.9)),
        ((300, 100), (1.0, 1.0)),
    ],
)
def test_slices_are_resampled_to_the_model_pixel_size(in_shape: tuple[int, int], spacing: tuple[float, float]) -> None:
    """Physical scale: the resampled slice is its extent in mm divided by the pixel size, whatever its field of view."""
    grid = SliceGrid.fit(in_shape, spacing, pixel_mm=4.0, size=64, multiple=4)
    for n, s, r in zip(in_shape, spacing, grid.resized_shape):
        assert abs(r - n * s / 4.0) <= 0.5 + 1e-9
    assert all(c >= 64 and c % 4 == 0 for c in grid.canvas)


def test_the_same_tissue_is_the_same_size_in_a_crop_and_in_a_whole_body_ct() -> None:
    """A 60 mm disc in a 130 mm crop at 0.5 mm and in a 500 mm field of view at 1 mm covers the
    same number of model pixels (the model sees tissue at one scale)."""

    def disc_pixels(n: int, spacing: float) -> float:
        c = (np.arange(n) - (n - 1) / 2) * spacing
        disc = torch.from_numpy(((c[:, None] ** 2 + c[None, :] ** 2) <= 30.0**2).astype(np.float32))[None]
        grid = SliceGrid.fit((n, n), (spacing, spacing), pixel_mm=2.0, size=64, multiple=4)
        return float(grid.to_model(disc, fill=0.0).sum())

    crop, whole = disc_pixels(260, 0.5), disc_pixels(500, 1.0)
    assert crop == pytest.approx(whole, rel=0.02)
    assert crop == pytest.approx(math.pi * 15.0**2, rel=0.03)  # a 30 px radius at 2 mm pixels


def test_the_canvas_is_centred_on_the_body_box() -> None:
    """A 500 mm field of view at 1 mm with the body in its upper-left: the 64 px canvas of 2 mm
    (128 mm) is centred on the body box and shows it whole; the rest of the slice is cropped."""
    grid = SliceGrid.fit((500, 500), (1.0, 1.0), pixel_mm=2.0, size=64, multiple=4, box=(40, 140, 60, 120))
    assert grid.resized_shape == (250, 250) and grid.canvas == (64, 64)
    centre_y, centre_x = (40 + 140) / 4, (60 + 120) / 4  # the box centre on the resampled slice
    assert grid.offset[0] + centre_y == pytest.approx(32, abs=1) and grid.offset[1] + centre_x == pytest.approx(32, abs=1)
    x = torch.zeros(1, 500, 500)
    x[:, 40:140, 60:120] = 1.0
    assert float(grid.to_model(x, fill=0.0).sum()) == pytest.approx(50 * 30, rel=0.02)  # all of the body


def test_a_body_wider_than_the_grid_gets_a_larger_canvas() -> None:
    grid = SliceGrid.fit((600, 600), (1.0, 1.0), pixel_mm=4.0, size=64, multiple=4, box=(100, 500, 50, 550))
    body_px = (100, 125)  # 400 x 500 mm at 4 mm
    assert grid.canvas[0] >= body_px[0] + 2 * MARGIN_PX and grid.canvas[1] >= body_px[1] + 2 * MARGIN_PX
    assert all(c % 4 == 0 for c in grid.canvas)
    assert grid.canvas == (108, 136)  # 100 + 8 and 125 + 8 px, rounded up to the size multiple


def test_a_small_slice_is_padded_and_a_slice_that_fits_stays_whole() -> None:
    """A 100 mm crop at 4 mm is 25 px: it lies whole on the 64 px canvas, the rest is ``fill``."""
    grid = SliceGrid.fit((100, 100), (1.0, 1.0), pixel_mm=4.0, size=64, multiple=4, box=(0, 10, 0, 10))
    oy, ox = grid.offset
    assert 0 <= oy <= 64 - 25 and 0 <= ox <= 64 - 25  # never pushed off the canvas by an off-centre box
    m = grid.to_model(torch.ones(1, 100, 100), fill=-1.0)
    assert float((m > 0.99).sum()) == 25 * 25 and float((m == -1.0).sum()) == 64 * 64 - 25 * 25


@pytest.mark.parametrize(
    ("in_shape", "spacing", "pixel_mm", "tol"),
    [((512, 400), (0.8, 1.0), 3.2, 0.02), ((40, 48), (0.8, 0.9), 0.5, 0.01), ((100, 60), (1.0, 2.0), 1.0, 0.01)],
)
def test_round_trip_of_smooth_image(in_shape: tuple[int, int], spacing: tuple[float, float], pixel_mm: float, tol: float) -> None:
    grid = SliceGrid.fit(in_shape, spacing, pixel_mm, size=64, multiple=4)
    x = _smooth(2, *in_shape)
    on_model = grid.to_model(x)
    assert on_model.shape == (2, *grid.canvas)
    back = grid.from_model(on_model)
    assert back.shape == x.shape
    assert float((back - x).abs().max()) < tol


def test_slice_pixels_outside_the_canvas_come_back_as_fill() -> None:
    grid = SliceGrid.fit((400, 400), (1.0, 1.0), pixel_mm=2.0, size=64, multiple=4, box=(150, 250, 150, 250))
    back = grid.from_model(torch.ones(1, *grid.canvas), fill=-1.0)
    assert float(back[0, 200, 200]) == 1.0  # the body, on the canvas
    assert float(back[0, 5, 5]) == -1.0  # a corner of the wide field of view, off the canvas


def test_label_maps_keep_their_labels_and_places() -> None:
    """Nearest neighbour: no blended label values; each label keeps its area (scaled) and centre."""
    grid = SliceGrid.fit((60, 90), (1.0, 1.0), pixel_mm=2.0, size=48, multiple=4)
    labels = torch.zeros(1, 60, 90)
    labels[0, 10:20, 10:30] = 3.0  # 10 x 20 px
    labels[0, 40:50, 60:80] = 7.0
    m = grid.to_model(labels, fill=0.0, labels=True)
    oy, ox = grid.offset
    assert set(m.unique().tolist()) == {0.0, 3.0, 7.0}
    for value, (y0, x0) in ((3.0, (15.0, 20.0)), (7.0, (45.0, 70.0))):  # centres in mm from the corner
        ys, xs = torch.nonzero(m[0] == value, as_tuple=True)
        assert len(ys) == 5 * 10  # 10 x 20 px at 1 mm -> 5 x 10 px at 2 mm
        # model pixel j covers [2j, 2j + 2) mm: its centre is at 2j + 1 mm
        assert float(ys.float().mean()) == pytest.approx((y0 - 1.0) / 2 + oy, abs=0.01)
        assert float(xs.float().mean()) == pytest.approx((x0 - 1.0) / 2 + ox, abs=0.01)


def test_the_grid_matches_simpleitk_physical_resampling() -> None:
    """The resampled slice agrees with SimpleITK resampling the same slice onto a grid of
    ``pixel_mm`` pixels by physical coordinates (an independent implementation)."""
    config = preset("small")
    ny, nx, s = 180, 150, 1.3
    slice_ = _smooth(1, ny, nx)
    grid = SliceGrid.for_model((ny, nx), (s, s), config)
    on_model = grid.to_model(slice_, fill=0.0)[0].numpy()
    image = sitk.GetImageFromArray(slice_[0].numpy().astype(np.float64))
    image.SetSpacing((s, s))
    # Model pixel (i, j) of the resampled slice covers [i*p, (i+1)*p) mm from the slice's edge.
    p = ny * s / grid.resized_shape[0], nx * s / grid.resized_shape[1]
    reference = sitk.Image(grid.resized_shape[::-1], sitk.sitkFloat64)
    reference.SetSpacing(p[::-1])
    reference.SetOrigin((p[1] / 2 - s / 2, p[0] / 2 - s / 2))
    resampled = sitk.GetArrayFromImage(sitk.Resample(sitk.SmoothingRecursiveGaussian(image, p[0] / 2.5), reference))
    (oy, ox), (ry, rx) = grid.offset, grid.resized_shape
    ours = on_model[oy : oy + ry, ox : ox + rx]
    assert np.abs(ours - resampled)[2:-2, 2:-2].max() < 0.02
