"""PET image formation for the phantom: resolution blur, a coarser PET grid, noise.

Activity maps are float32 SUVbw on the CT grid. :func:`blur_fwhm` applies the scanner
resolution (Gaussian of a given FWHM in mm), :func:`sample` reads the blurred map at
any physical points (the PET grid, possibly moved by a misalignment) with trilinear
interpolation, and :func:`add_noise` adds noise whose standard deviation grows with the
square root of the local activity (Poisson-like counting statistics), spatially
correlated over about a PET pixel as in an iteratively reconstructed image.
:func:`scan` chains them into the aligned and the misaligned PET of a phantom.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .phantom_grid import Grid

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def blur_fwhm(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    fwhm_mm: float,
    voxel_mm: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Gaussian blur of ``fwhm_mm`` (isotropic, mm) on a (z, y, x) volume with ``spacing`` mm.

    With ``voxel_mm`` (the PET voxel size), the averaging over a PET voxel is added as a
    box of that width (variance ``voxel**2 / 12``), so thick PET slices are not point samples.
    """
    box = voxel_mm or (0.0, 0.0, 0.0)
    sigma = [np.sqrt((fwhm_mm * FWHM_TO_SIGMA) ** 2 + b**2 / 12.0) / s for s, b in zip(spacing, box)]
    if max(sigma) <= 0:
        return volume.astype(np.float32, copy=True)
    return ndimage.gaussian_filter(volume.astype(np.float32, copy=False), sigma, mode="constant", truncate=3.0)


def sample(volume: np.ndarray, grid: Grid, depth: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` (on ``grid``) at physical points (broadcast arrays, mm).

    Points outside the volume read 0 (no activity outside the field of view).
    """
    shape = np.broadcast_shapes(np.shape(depth), np.shape(y), np.shape(x))
    k, j, i = grid.to_index(np.broadcast_to(depth, shape), np.broadcast_to(y, shape), np.broadcast_to(x, shape))
    coords = np.stack([k.ravel(), j.ravel(), i.ravel()]).astype(np.float32)
    out = ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape).astype(np.float32, copy=False)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], correlation_mm: float
) -> np.ndarray:
    """Random field of about unit variance, smooth over ``correlation_mm`` (float32, ``shape``).

    Drawn on a coarse lattice and interpolated, so it costs little on large grids.
    """
    coarse = tuple(max(2, int(np.ceil(n * s / correlation_mm)) + 1) for n, s in zip(shape, spacing))
    field = rng.standard_normal(coarse).astype(np.float32)
    zoomed = ndimage.zoom(field, [n / c for n, c in zip(shape, coarse)], order=1, grid_mode=True, mode="nearest")
    zoomed = zoomed[tuple(slice(0, n) for n in shape)]
    return zoomed / max(float(zoomed.std()), 1e-6)


def noise_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float = 0.6) -> np.ndarray:
    """Unit-variance Gaussian noise correlated over about ``sigma_voxels`` (default: one voxel; float32)."""
    white = rng.standard_normal(shape).astype(np.float32)
    correlated = ndimage.gaussian_filter(white, sigma_voxels, mode="wrap") if sigma_voxels > 0 else white
    return correlated / max(float(correlated.std()), 1e-6)


def add_noise(activity: np.ndarray, field: np.ndarray, level: float, floor: float = 0.02) -> np.ndarray:
    """``activity + level * sqrt(activity + floor) * field``, clipped at 0 (SUV, float32).

    With ``level`` 0.15 the liver (SUV about 2.2) has a coefficient of variation of
    about 10 %, as in a clinical whole-body FDG scan.
    """
    noisy = activity + level * np.sqrt(np.maximum(activity, 0.0) + floor) * field
    return np.maximum(noisy, 0.0).astype(np.float32, copy=False)


Points = tuple[np.ndarray, np.ndarray, np.ndarray]


def scan(
    activity: np.ndarray,
    grid: Grid,
    pet_grid: Grid,
    fwhm_mm: float,
    noise: np.ndarray,
    level: float,
    move: Callable[[np.ndarray, np.ndarray, np.ndarray], Points] | None = None,
    silent_outside: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned and the misaligned PET (SUV, float32, ``pet_grid`` shape) of ``activity`` on ``grid``.

    The activity is blurred to ``fwhm_mm`` plus the PET voxel, read at the PET voxel centres
    (aligned) and at the points ``move`` maps them to (misaligned; a copy of the aligned
    PET when ``move`` is None), and both get the same ``noise`` field at ``level``.
    ``silent_outside`` keeps voxels that no activity reaches through the blur at exactly 0
    (no noise floor in the air and on the couch).
    """
    blurred = blur_fwhm(activity, grid.spacing, fwhm_mm, pet_grid.spacing)
    d, y, x = pet_grid.depth[:, None, None], pet_grid.y[None, :, None], pet_grid.x[None, None, :]

    def measured(points: Points) -> np.ndarray:
        signal = sample(blurred, grid, *points)
        pet = add_noise(signal, noise, level)
        if silent_outside:
            pet[signal <= 0.0] = 0.0
        return pet

    aligned = measured((d, y, x))
    return aligned, (aligned.copy() if move is None else measured(move(d, y, x)))
