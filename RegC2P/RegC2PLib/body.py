"""The patient's body in a CT: the region where a PET can show activity.

One function, :func:`body_mask`, used everywhere a body is needed: inference sets the
synthetic PET to 0 outside it, the model grid is centred on its bounding box, and the
"SUV … in the body" metrics are computed inside it.

Steps (for a CT in HU, axial slices): voxels above :data:`BODY_THRESHOLD_HU`; a
morphological opening by :data:`OPENING_MM` in-plane (at most a tenth of the body's width),
which cuts thin things touching the patient (couch surfaces, blankets, thermoplastic masks, cables, ECG leads); connected
components in 3D, keeping the largest and every other one at least
:data:`KEEP_FRACTION` of its size (the other leg of a thigh scan, arms beside the trunk),
so couch fragments and head-rest blocks drop out; holes filled slice by slice (lungs,
bowel gas, the airway). The opening, the components and the hole filling run on a grid
shrunk in-plane to about :data:`WORK_MM` (a 512×512×600 CT is about 9 times fewer
voxels), then the outline is taken back to full resolution from the threshold itself, so
the edge is as sharp as the CT's pixels.

Written with SciPy/NumPy because the steps are standard ones (scipy.ndimage), but the
shrunk grid and the edge refinement are ours: SimpleITK's opening on a full-resolution
whole-body CT takes tens of seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

BODY_THRESHOLD_HU = -500.0  # air, lungs' outside, couch foam and most blankets are below
OPENING_MM = 4.0  # radius: structures thinner than about 8 mm are cut off the body
KEEP_FRACTION = 0.1  # other components kept if at least this share of the largest
WORK_MM = 2.0  # in-plane pixel size of the working grid


def body_mask(hu: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Body mask (bool, same (z, y, x) shape) of a CT ``hu`` in HU with voxel size ``spacing_zyx`` mm.

    ``hu`` may be any array-like view (e.g. an axial view of an image buffer); it is
    only read. A CT with no voxel above the threshold has an empty mask.
    """
    above = np.asarray(hu) > BODY_THRESHOLD_HU
    if not above.any():
        return above
    sy, sx = float(spacing_zyx[1]), float(spacing_zyx[2])
    fy, fx = (max(1, round(WORK_MM / s)) for s in (sy, sx))
    blocks = _blocks(above, fy, fx)  # (z, Y, fy, X, fx) view of the (padded) threshold
    coarse = blocks.sum(axis=(2, 4), dtype=np.uint8) >= (fy * fx + 1) // 2  # at least half of each block

    # The opening never takes more than a tenth of the body's width (a small body, a child's limb).
    rows, cols = np.flatnonzero(coarse.any(axis=(0, 2))), np.flatnonzero(coarse.any(axis=(0, 1)))
    width_mm = min((rows[-1] - rows[0] + 1) * fy * sy, (cols[-1] - cols[0] + 1) * fx * sx)
    radius_mm = min(OPENING_MM, width_mm / 10.0)
    opened = coarse
    if radius_mm >= min(fy * sy, fx * sx):
        disk = _in_plane_disk((radius_mm / (fy * sy), radius_mm / (fx * sx)))
        # Outside the field of view counts as body for the erosion, so a crop through the body keeps its edges.
        opened = ndimage.binary_dilation(ndimage.binary_erosion(coarse, disk, border_value=1), disk) & coarse
    labels, count = ndimage.label(opened)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= KEEP_FRACTION * sizes.max()) + 1
        opened = np.isin(labels, keep)
    else:
        opened = labels > 0
    filled = _fill_holes_in_plane(opened)
    # Back to full resolution: within one working pixel of the coarse body the threshold
    # draws the outline; inside the eroded coarse body everything counts, lungs included.
    cross = _in_plane_disk((1.0, 1.0))
    near = ndimage.binary_dilation(filled, cross)
    interior = ndimage.binary_erosion(filled, cross)
    full = blocks & near[:, :, None, :, None] | interior[:, :, None, :, None]
    nz, ny, nx = above.shape
    return full.reshape(nz, full.shape[1] * fy, full.shape[3] * fx)[:, :ny, :nx]


def _fill_holes_in_plane(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not reach the edge of its slice set True.

    Labels the background once with in-plane connectivity (``ndimage.label``) instead of
    ``binary_fill_holes``' repeated dilations, which is several times slower here.
    """
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    background, _ = ndimage.label(~mask, structure=in_plane)
    edge = np.unique(
        np.concatenate(
            [background[:, 0].ravel(), background[:, -1].ravel(), background[:, :, 0].ravel(), background[:, :, -1].ravel()]
        )
    )
    return mask | ~np.isin(background, edge)


def in_plane_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The in-plane box (y0, y1, x0, x1), end exclusive, holding every True voxel of a (z, y, x)
    mask on any slice; None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def axial_extent(mask: np.ndarray) -> tuple[int, int]:
    """(z0, z1), end exclusive: the slices from the first to the last holding a True voxel of a
    (z, y, x) mask; (0, 0) when the mask is empty."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    return (int(slices[0]), int(slices[-1]) + 1) if slices.size else (0, 0)


def _in_plane_disk(radius_yx: tuple[float, float]) -> np.ndarray:
    """A 3D structuring element that is an ellipse of ``radius_yx`` pixels in one z plane."""
    ry, rx = (max(1.0, r) for r in radius_yx)
    ny, nx = int(np.floor(ry)), int(np.floor(rx))
    yy, xx = np.mgrid[-ny : ny + 1, -nx : nx + 1]
    disk = (yy / ry) ** 2 + (xx / rx) ** 2 <= 1.0
    return disk[None]


def _blocks(mask: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """``mask`` (z, y, x) as (z, Y, fy, X, fx) in-plane blocks, padded with False to whole blocks."""
    nz, ny, nx = mask.shape
    py, px = -ny % fy, -nx % fx
    padded = np.pad(mask, ((0, 0), (0, py), (0, px))) if py or px else mask
    return padded.reshape(nz, (ny + py) // fy, fy, (nx + px) // fx, fx)
