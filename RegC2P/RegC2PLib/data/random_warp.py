"""Random smooth deformations of a labelled CT: one more patient from the same anatomy.

A :class:`Warp` is a backward mapping from every voxel of an output grid to a point of the
source volume, composed of

* a global scaling (body length along z, width and depth in-plane) and a small in-plane
  rotation about the centre of the field of view;
* per-organ growth or shrinkage: a radial displacement around an organ's centre that fades
  with a Gaussian of about the organ's radius (liver, spleen, kidneys, bladder filling);
* a smooth elastic field (random, correlated over tens of mm, a few mm RMS).

Images are resampled with it trilinearly, labels by nearest neighbour, so a CT and its
labels stay consistent. Coordinates are voxel indices (z, y, x) of the source unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .pet_physics import smooth_field


@dataclass(frozen=True)
class WarpSettings:
    """Ranges of a random :class:`Warp`: scales (output / source size), rotation ±degrees,
    elastic RMS displacement and correlation length in mm, per-label organ scale ranges."""

    scale_z: tuple[float, float] = (0.92, 1.08)
    scale_xy: tuple[float, float] = (0.88, 1.15)
    aspect: tuple[float, float] = (0.94, 1.06)  # depth / width scale
    rotation_deg: float = 4.0
    elastic_mm: float = 6.0
    correlation_mm: float = 70.0
    organ_scales: dict[int, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Warp:
    """A drawn deformation: ``coords`` (3, *out_shape) float32 source voxel coordinates of every output voxel."""

    out_shape: tuple[int, int, int]
    scale: tuple[float, float, float]
    rotation_deg: float
    elastic_rms_mm: float
    organ_scales: dict[int, float]
    coords: np.ndarray

    def apply(self, volume: np.ndarray, order: int, fill: float) -> np.ndarray:
        """``volume`` (source grid) on the output grid: ``order`` 1 trilinear (images), 0 nearest (labels)."""
        out = ndimage.map_coordinates(volume, self.coords, order=order, mode="constant", cval=fill, prefilter=False)
        return out.astype(volume.dtype, copy=False)

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Source voxel coordinates (3, n) of output voxel coordinates ``points`` (3, n), trilinear in the field."""
        return np.stack([ndimage.map_coordinates(c, points, order=1, mode="nearest", prefilter=False) for c in self.coords])

    def describe(self) -> dict[str, object]:
        return {
            "scale_zyx": list(self.scale),
            "rotation_deg": self.rotation_deg,
            "elastic_rms_mm": self.elastic_rms_mm,
            "organ_scales": {str(k): v for k, v in self.organ_scales.items()},
        }


def _organs(mask: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Centre (voxel coordinates) and voxel count of each organ of ``mask``: its connected parts
    holding at least 10 % of it (both kidneys of one label, not the fragments)."""
    parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    sizes = np.bincount(parts.ravel())[1:]
    keep = [i + 1 for i in range(n) if sizes[i] >= 0.1 * sizes.sum()]
    centres = ndimage.center_of_mass(mask, parts, keep)
    return [(np.asarray(c), int(sizes[i - 1])) for c, i in zip(centres, keep)]


def draw_warp(
    rng: np.random.Generator,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    settings: WarpSettings,
) -> Warp:
    """Draw a deformation of a source volume with label map ``labels`` (z, y, x) and ``spacing`` mm.

    The output grid has the source spacing and a shape scaled with the body, so the
    deformed patient stays in the field of view.
    """
    sz = rng.uniform(*settings.scale_z)
    sx = rng.uniform(*settings.scale_xy)
    sy = sx * rng.uniform(*settings.aspect)
    scale = np.array([sz, sy, sx])
    angle = np.radians(rng.uniform(-1.0, 1.0) * settings.rotation_deg)
    factors = {label: float(rng.uniform(*r)) for label, r in sorted(settings.organ_scales.items())}
    src_shape = np.array(labels.shape)
    out_shape = tuple(int(n) for n in np.maximum(np.round(src_shape * scale), 8))
    sp = np.asarray(spacing, float)
    src_centre_mm = (src_shape - 1) / 2.0 * sp
    out_centre_mm = (np.array(out_shape) - 1) / 2.0 * sp
    # Output mm -> source mm: undo rotation (in-plane) and scaling about the centres.
    c, s = np.cos(angle), np.sin(angle)
    inverse = np.diag(1.0 / scale) @ np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    grids = np.meshgrid(
        *(np.arange(n, dtype=np.float32) * np.float32(d) for n, d in zip(out_shape, sp)), indexing="ij", sparse=True
    )
    rel = [g - np.float32(o) for g, o in zip(grids, out_centre_mm)]
    # Organ growth: radial displacement in output mm around each organ's (affinely mapped) centre.
    forward = np.linalg.inv(inverse)
    bulge = [np.zeros(out_shape, np.float32) for _ in range(3)]
    for label, factor in factors.items():
        for centre_vox, size in _organs(labels == label):
            centre = forward @ (centre_vox * sp - src_centre_mm)
            radius = max(float((size * float(np.prod(sp)) * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)), 5.0)
            d = [r - np.float32(q) for r, q in zip(rel, centre)]
            weight = np.exp(-(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) / np.float32(2.0 * radius**2)).astype(np.float32)
            for axis in range(3):
                bulge[axis] += np.float32(1.0 / factor - 1.0) * d[axis] * weight
    # Elastic part (source mm), one unit-variance field per axis.
    per_axis = settings.elastic_mm / np.sqrt(3.0)
    elastic = [per_axis * smooth_field(rng, out_shape, tuple(sp), settings.correlation_mm) for _ in range(3)]
    moved = [r + b for r, b in zip(rel, bulge)]
    coords = np.empty((3, *out_shape), np.float32)
    for axis in range(3):
        mm = sum(np.float32(inverse[axis, j]) * moved[j] for j in range(3)) + np.float32(src_centre_mm[axis]) + elastic[axis]
        coords[axis] = mm / np.float32(sp[axis])
    # Along z the source ends where the scan ends, not where the body does: the first and
    # last slices are repeated rather than cut off (in-plane, beyond the field of view is air).
    np.clip(coords[0], 0.0, src_shape[0] - 1.0, out=coords[0])
    rms = float(np.sqrt(sum(float(np.mean(e**2)) for e in elastic)))
    return Warp(out_shape, (float(sz), float(sy), float(sx)), float(np.degrees(angle)), rms, factors, coords)
