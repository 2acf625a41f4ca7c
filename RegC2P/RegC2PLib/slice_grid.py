"""In-plane mapping between a volume's axial slices and the model's square grid.

A slice of ``(ny, nx)`` pixels with spacing ``(sy, sx)`` mm is resized so that its
physical field of view fits an ``M×M`` model grid with square pixels (aspect ratio
kept), then padded symmetrically with the background value. The inverse crops and
resizes back. Training samples and inference use this same mapping, so a model always
sees slices the way it was trained. Pure torch (``F.interpolate`` with antialiasing),
because it runs on batches of slices on the inference device; whole-volume physical
resampling between grids is SimpleITK's job (see ``volume_io``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceGrid:
    """Geometry of the in-plane map for one volume.

    ``in_shape`` (ny, nx) pixels; ``resized_shape`` (ry, rx) <= (M, M);
    ``pad`` (top, bottom, left, right) pixels on the model grid; ``size`` M.
    """

    in_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    pad: tuple[int, int, int, int]
    size: int

    @classmethod
    def fit(cls, in_shape: tuple[int, int], spacing_yx: tuple[float, float], size: int) -> SliceGrid:
        """Fit a slice of ``in_shape`` pixels at ``spacing_yx`` mm into ``size``×``size``."""
        ny, nx = (int(n) for n in in_shape)
        extent_y, extent_x = ny * float(spacing_yx[0]), nx * float(spacing_yx[1])
        pixel = max(extent_y, extent_x) / size
        ry = min(size, max(1, round(extent_y / pixel)))
        rx = min(size, max(1, round(extent_x / pixel)))
        top, left = (size - ry) // 2, (size - rx) // 2
        return cls((ny, nx), (ry, rx), (top, size - ry - top, left, size - rx - left), size)

    def to_model(self, slices: torch.Tensor, fill: float = -1.0, labels: bool = False) -> torch.Tensor:
        """``(n, ny, nx)`` -> ``(n, M, M)``; padding takes ``fill`` (network-scale background).

        ``labels``: the slices are a label map (float-typed), resized by nearest neighbour.
        """
        x = _resize(slices, self.resized_shape, labels)
        top, bottom, left, right = self.pad
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=fill)
        return x

    def from_model(self, slices: torch.Tensor) -> torch.Tensor:
        """``(n, M, M)`` -> ``(n, ny, nx)``: crop the padding, resize back."""
        top, _, left, _ = self.pad
        ry, rx = self.resized_shape
        return _resize(slices[:, top : top + ry, left : left + rx], self.in_shape)


def _resize(slices: torch.Tensor, shape: tuple[int, int], labels: bool = False) -> torch.Tensor:
    if tuple(slices.shape[-2:]) == tuple(shape):
        return slices
    if labels:
        return F.interpolate(slices[:, None], size=shape, mode="nearest-exact")[:, 0]
    downsampling = shape[0] < slices.shape[-2] or shape[1] < slices.shape[-1]
    out = F.interpolate(slices[:, None], size=shape, mode="bilinear", align_corners=False, antialias=downsampling)
    return out[:, 0]
