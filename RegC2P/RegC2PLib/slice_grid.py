"""In-plane mapping between a volume's axial slices and the model grid, at a fixed physical scale.

A slice of ``(ny, nx)`` pixels of ``(sy, sx)`` mm is resampled to square pixels of the
model's ``pixel_mm`` (so tissue has the same size in pixels whatever the scanner's field
of view), then placed on a *canvas* of at least ``size``×``size`` pixels whose centre is
the centre of the body's bounding box; the canvas is larger than ``size`` only when the
body is (the networks are fully convolutional), rounded up to the networks' size multiple.
The resampled slice is cropped where it extends past the canvas (air around a body in a
wide field of view) and padded with the background value where it does not reach it. The
inverse takes the canvas back onto the slice's own pixels; slice pixels that fell outside
the canvas get the background.

Training samples, validation and inference all use this mapping, so a model always sees
slices the way it was trained. Pure torch (``F.interpolate`` with antialiasing), because
it runs on batches of slices on the inference device; whole-volume physical resampling
between grids is SimpleITK's job (see ``volume_io``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ModelConfig

MARGIN_PX = 4  # air kept around the body on the canvas when the body sets its size


@dataclass(frozen=True)
class SliceGrid:
    """Geometry of the in-plane map for one volume.

    ``in_shape`` (ny, nx) slice pixels; ``resized_shape`` (ry, rx) the slice resampled to
    the model's pixel size; ``canvas`` (H, W) the model grid; ``offset`` (oy, ox) where
    resampled pixel (0, 0) lies on the canvas (negative: the slice is cropped there).
    """

    in_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int]

    @classmethod
    def fit(
        cls,
        in_shape: tuple[int, int],
        spacing_yx: tuple[float, float],
        pixel_mm: float,
        size: int,
        multiple: int = 1,
        box: tuple[int, int, int, int] | None = None,
    ) -> SliceGrid:
        """The map for slices of ``in_shape`` pixels of ``spacing_yx`` mm onto a grid of
        ``pixel_mm`` mm, at least ``size`` pixels a side, sides divisible by ``multiple``,
        centred on ``box`` = (y0, y1, x0, x1) (slice pixels, end exclusive; None: the whole slice)."""
        ny, nx = (int(n) for n in in_shape)
        ry = max(1, round(ny * float(spacing_yx[0]) / pixel_mm))
        rx = max(1, round(nx * float(spacing_yx[1]) / pixel_mm))
        y0, y1, x0, x1 = box if box is not None else (0, ny, 0, nx)
        canvas, offset = [], []
        for n, r, lo, hi in ((ny, ry, y0, y1), (nx, rx, x0, x1)):
            lo_r, hi_r = lo * r / n, hi * r / n  # the box on the resampled slice
            margin = 2 * MARGIN_PX if box is not None else 0
            side = max(size, _round_up(math.ceil(hi_r - lo_r) + margin, multiple))
            shift = round(side / 2 - (lo_r + hi_r) / 2)
            # Keep the whole slice on the canvas when it fits, and the canvas covered when it does not.
            shift = min(max(shift, side - r), 0) if r > side else min(max(shift, 0), side - r)
            canvas.append(side)
            offset.append(shift)
        return cls((ny, nx), (ry, rx), (canvas[0], canvas[1]), (offset[0], offset[1]))

    @classmethod
    def for_model(
        cls,
        in_shape: tuple[int, int],
        spacing_yx: tuple[float, float],
        config: ModelConfig,
        box: tuple[int, int, int, int] | None = None,
    ) -> SliceGrid:
        """:meth:`fit` with the pixel size, grid size and size multiple of a model of ``config``."""
        return cls.fit(in_shape, spacing_yx, config.pixel_mm, config.image_size, config.size_multiple, box)

    def to_model(self, slices: torch.Tensor, fill: float = -1.0, labels: bool = False) -> torch.Tensor:
        """``(n, ny, nx)`` -> ``(n, H, W)``; the canvas outside the slice takes ``fill``.

        ``labels``: the slices are a label map (float-typed), resized by nearest neighbour.
        """
        resized = _resize(slices, self.resized_shape, labels)
        out = slices.new_full((slices.shape[0], *self.canvas), fill)
        (cy, sy), (cx, sx) = (_overlap(o, r, c) for o, r, c in zip(self.offset, self.resized_shape, self.canvas))
        out[:, cy, cx] = resized[:, sy, sx]
        return out

    def from_model(self, slices: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
        """``(n, H, W)`` -> ``(n, ny, nx)``: the slice's part of the canvas, resized back; slice
        pixels that lie outside the canvas take ``fill``."""
        resized = slices.new_full((slices.shape[0], *self.resized_shape), fill)
        (cy, sy), (cx, sx) = (_overlap(o, r, c) for o, r, c in zip(self.offset, self.resized_shape, self.canvas))
        resized[:, sy, sx] = slices[:, cy, cx]
        return _resize(resized, self.in_shape)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _overlap(offset: int, length: int, canvas: int) -> tuple[slice, slice]:
    """(canvas slice, resampled-slice slice) of the part of a line of ``length`` placed at ``offset`` that is on the canvas."""
    start, stop = max(offset, 0), min(offset + length, canvas)
    return slice(start, stop), slice(start - offset, stop - offset)


def _resize(slices: torch.Tensor, shape: tuple[int, int], labels: bool = False) -> torch.Tensor:
    if tuple(slices.shape[-2:]) == tuple(shape):
        return slices
    if labels:
        return F.interpolate(slices[:, None], size=shape, mode="nearest-exact")[:, 0]
    downsampling = shape[0] < slices.shape[-2] or shape[1] < slices.shape[-1]
    out = F.interpolate(slices[:, None], size=shape, mode="bilinear", align_corners=False, antialias=downsampling)
    return out[:, 0]
