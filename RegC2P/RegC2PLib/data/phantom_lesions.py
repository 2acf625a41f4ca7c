"""FDG-avid lesions for the phantom: lung nodules, liver metastases, lymph nodes.

Each lesion is a small irregular ellipsoid with its own SUV (3-15) and CT number.
Lung nodules are solid (clearly visible in aerated lung); liver lesions are only
5-25 HU darker than the liver on a non-contrast CT (barely visible); lymph nodes have
soft-tissue density, visible in fat but hardly next to vessels or muscle. That
ambiguity is real: a model has to learn that not every CT finding is avid and that
some avid lesions are hard to see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .phantom_anatomy import BONE, EQUIPMENT, BodyPlan, Tissue, TissueValues
from .phantom_grid import Canvas, Grid, ellipsoid_r2

KINDS = ("lung", "liver", "node")
_KIND_P = (0.35, 0.3, 0.35)
_RADIUS_MM = {"lung": (4.0, 10.0), "liver": (6.0, 14.0), "node": (5.0, 11.0)}
_HOST = {"lung": (Tissue.LUNG,), "liver": (Tissue.LIVER,), "node": (Tissue.FAT, Tissue.ABDOMEN, Tissue.MUSCLE, Tissue.BLOOD)}


@dataclass(frozen=True)
class Lesion:
    """One lesion: label in the lesion map, centre (depth, y, x) mm, radii mm, SUV, HU."""

    label: int
    kind: str
    center_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    suv: float
    hu: float
    host_hu: float  # CT number of the tissue around it: |hu - host_hu| is its CT contrast

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _node_stations(plan: BodyPlan) -> list[tuple[float, float, float]]:
    """Typical nodal stations (depth, y, x) mm: cervical, axillary, mediastinal, para-aortic, iliac."""
    L = plan.length
    ac, _, yc = plan.cavity_at(plan.apex + 80.0)
    return [
        (240.0 * L, -15.0, -32.0),
        (240.0 * L, -15.0, 32.0),
        (plan.apex + 40.0, yc, -0.85 * ac),
        (plan.apex + 40.0, yc, 0.85 * ac),
        (380.0 * L, yc - 10.0, -16.0),
        (425.0 * L, yc + 20.0, 0.0),
        (430.0 * L, yc + 5.0, -42.0),
        (430.0 * L, yc + 5.0, 42.0),
        (690.0 * L, float(plan.spine_y(np.array([690.0 * L]))[0]) - 35.0, 32.0),
        (830.0 * L, yc - 10.0, -55.0),
        (830.0 * L, yc - 10.0, 55.0),
    ]


def place_lesions(
    grid: Grid,
    labels: np.ndarray,
    plan: BodyPlan,
    values: TissueValues,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Lesion]]:
    """Paint ``count`` lesions; returns the lesion label map (uint8, (z, y, x)) and the lesions.

    A lesion whose host organ is not in the field of view is replaced by a lymph node;
    fewer lesions are returned only if no host tissue is in view at all.
    """
    canvas = Canvas(grid)
    lesions: list[Lesion] = []
    stations = [s for s in _node_stations(plan) if canvas.block(s, s) is not None]
    for _ in range(count):
        kind = str(rng.choice(KINDS, p=_KIND_P))
        center = _pick_center(canvas, labels, kind, stations, rng)
        if center is None and kind != "node":
            kind = "node"
            center = _pick_center(canvas, labels, kind, stations, rng)
        if center is None:
            continue
        r = rng.uniform(*_RADIUS_MM[kind])
        radii = tuple(float(r * f) for f in rng.uniform(0.8, 1.2, size=3))
        host = float(values.hu[labels[_nearest_index(grid, center)]])
        if kind == "lung":
            hu = rng.uniform(10.0, 40.0)
        elif kind == "liver":
            hu = float(values.hu[Tissue.LIVER]) - rng.uniform(5.0, 25.0)
        else:
            hu = rng.uniform(25.0, 45.0)
        lesion = Lesion(len(lesions) + 1, kind, center, radii, float(rng.uniform(3.0, 15.0)), float(hu), host)  # type: ignore[arg-type]
        block = canvas.ellipsoid_block(center, radii)  # type: ignore[arg-type]
        if block is None:
            continue
        sl, d, y, x = block
        mask = ellipsoid_r2(d, y, x, center, radii, float(rng.uniform(0, 180))) <= 1.0  # type: ignore[arg-type]
        mask &= ~np.isin(labels[sl], [*BONE, Tissue.AIR, Tissue.AIRWAY, *EQUIPMENT])
        if not mask.any():
            continue
        canvas.paint(sl, mask, lesion.label, over=[0])
        lesions.append(lesion)
    return canvas.labels, lesions


def _nearest_index(grid: Grid, center: tuple[float, float, float]) -> tuple[int, int, int]:
    k, j, i = grid.to_index(np.array(center[0]), np.array(center[1]), np.array(center[2]))
    return tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip((k, j, i), grid.shape))  # type: ignore[return-value]


def _pick_center(
    canvas: Canvas,
    labels: np.ndarray,
    kind: str,
    stations: list[tuple[float, float, float]],
    rng: np.random.Generator,
) -> tuple[float, float, float] | None:
    if kind == "node":
        if not stations:
            hosts = np.flatnonzero(np.isin(labels, _HOST["node"]))
            return _voxel_center(canvas, hosts, rng)
        base = stations[int(rng.integers(len(stations)))]
        return tuple(float(b + j) for b, j in zip(base, rng.normal(0.0, 4.0, size=3)))  # type: ignore[return-value]
    host = np.flatnonzero(labels == _HOST[kind][0])
    return _voxel_center(canvas, host, rng)


def _voxel_center(canvas: Canvas, flat: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float] | None:
    if flat.size == 0:
        return None
    k, j, i = np.unravel_index(int(flat[int(rng.integers(flat.size))]), canvas.labels.shape)
    return float(canvas.d[k]), float(canvas.y[j]), float(canvas.x[i])
