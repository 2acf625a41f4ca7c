"""FDG-avid lesions inserted into a deformed real anatomy, with the CT contrast each kind has.

Kinds (drawn among those whose host tissue is in the field of view):

* ``liver`` — metastasis, hypodense: 5–25 HU below the liver without contrast, 20–60 HU in
  the portal venous phase, where metastases stand out most;
* ``lung`` — solid nodule (10–40 HU) in aerated lung, obvious on CT;
* ``node`` — lymph node (25–45 HU, enhancing 10–30 HU with contrast) in the fat or soft
  tissue within 20 mm of the aorta, vena cava, iliac or portal vessels;
* ``bone`` — metastasis in marrow, lytic (20–60 HU) or sclerotic (400–900 HU);
* ``soft`` — soft-tissue mass in muscle (15–35 mm, sarcoma-like): nearly isodense with
  muscle, its viable part enhancing with contrast, large ones with a necrotic core of low uptake.

Every lesion has its own SUV (3–15, as in the whole-body phantom), a lobulated outline and
a soft (partial-volume) edge; the CT keeps its texture inside the lesion.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy_roles import BONE_ROLES, VESSEL_ROLES, Role
from .pet_physics import smooth_field
from .phantom_grid import Canvas, Grid, ellipsoid_r2
from .phantom_lesions import Lesion

KIND_WEIGHTS = {"liver": 0.3, "lung": 0.2, "node": 0.25, "bone": 0.15, "soft": 0.1}
RADIUS_MM = {"liver": (6.0, 14.0), "lung": (4.0, 10.0), "node": (5.0, 11.0), "bone": (6.0, 15.0), "soft": (15.0, 35.0)}
SUV_RANGE = (3.0, 15.0)
NODE_REACH_MM = 20.0
_NECROSIS_FROM_MM = 20.0


def _hosts(roles: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
    """Where each kind may be centred (bool masks); kinds with no host are left out."""
    hosts = {
        "liver": roles == Role.LIVER,
        "lung": roles == Role.LUNG,
        "bone": roles == Role.BONE_MARROW,
        "soft": roles == Role.MUSCLE,
    }
    vessels = np.isin(roles, VESSEL_ROLES)
    if vessels.any():
        near = ndimage.distance_transform_edt(~vessels, sampling=spacing) <= NODE_REACH_MM
        hosts["node"] = near & np.isin(roles, [Role.FAT, Role.SOFT])
    return {kind: mask for kind, mask in hosts.items() if mask.any()}


_ALLOWED = {
    "liver": (Role.LIVER,),
    "lung": (Role.LUNG,),
    "bone": BONE_ROLES,
    "node": (Role.FAT, Role.SOFT),
    "soft": (Role.MUSCLE, Role.SOFT, Role.FAT),
}


def _lesion_hu(kind: str, phase: str, host_hu: float, muscle_hu: float, rng: np.random.Generator) -> float:
    """CT number of a lesion: relative to the liver around it, to this CT's muscle, or absolute.

    Always draws the same numbers, so the phase changes lesions' HU and nothing else.
    """
    u = rng.uniform(size=3)
    enhancement = 0.0 if phase == "native" else 10.0 + 20.0 * u[1]
    if kind == "liver":
        low, high = {"native": (5.0, 25.0), "arterial": (10.0, 40.0), "venous": (20.0, 60.0)}[phase]
        return host_hu - (low + (high - low) * u[0])
    if kind == "lung":
        return 10.0 + 30.0 * u[0]
    if kind == "node":
        return 25.0 + 20.0 * u[0] + enhancement
    if kind == "bone":
        return 20.0 + 40.0 * u[0] if u[2] < 0.5 else 400.0 + 500.0 * u[0]
    return muscle_hu - 15.0 * u[0] + enhancement


def _grain(hu: np.ndarray, roles: np.ndarray) -> np.ndarray:
    """The CT's own fine texture (HU, high-pass of 1 voxel), kept inside lesions: 0 where a voxel's
    neighbourhood holds more than one role (organ edges would leave ghosts), clipped to 3 robust SDs."""
    grain = hu - ndimage.gaussian_filter(hu, 1.0, mode="nearest")
    grain[ndimage.minimum_filter(roles, 3) != ndimage.maximum_filter(roles, 3)] = 0.0
    tissue = (grain != 0.0) & np.isin(roles, [Role.OUTSIDE, Role.COUCH, Role.GAS, Role.LUNG], invert=True)
    spread = 3.0 * 1.4826 * float(np.median(np.abs(grain[tissue]))) if tissue.any() else 0.0
    return np.clip(grain, -spread, spread)


def insert_lesions(
    grid: Grid,
    roles: np.ndarray,
    hu: np.ndarray,
    suv: np.ndarray,
    phase: str,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Lesion]]:
    """Insert up to ``count`` lesions into ``hu`` (HU) and ``suv`` (SUV) in place.

    Returns the lesion label map (uint8, (z, y, x), one label per lesion, where the lesion
    covers at least half of a voxel) and the lesions. Fewer are returned only when no
    host tissue is in view or a lesion's outline holds no allowed voxel.
    """
    canvas = Canvas(grid)
    hosts = _hosts(roles, grid.spacing)
    kinds = [k for k in KIND_WEIGHTS if k in hosts]
    lesions: list[Lesion] = []
    if not kinds:
        return canvas.labels, lesions
    p = np.array([KIND_WEIGHTS[k] for k in kinds])
    muscle = np.isin(roles, [Role.MUSCLE, Role.SOFT])
    muscle_hu = float(np.median(hu[muscle])) if muscle.any() else 45.0
    texture = _grain(hu, roles)
    for _ in range(count):
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        flat = np.flatnonzero(hosts[kind])
        k, j, i = np.unravel_index(int(flat[int(rng.integers(flat.size))]), roles.shape)
        center = (float(grid.depth[k]), float(grid.y[j]), float(grid.x[i]))
        r = rng.uniform(*RADIUS_MM[kind])
        radii = tuple(float(r * f) for f in rng.uniform(0.8, 1.2, size=3))
        angle = float(rng.uniform(0.0, 180.0))
        suv_value = float(rng.uniform(*SUV_RANGE))
        necrosis = kind == "soft" and r > _NECROSIS_FROM_MM and rng.uniform() < 0.5
        block = canvas.ellipsoid_block(center, radii)  # type: ignore[arg-type]
        if block is None:
            continue
        sl, d, y, x = block
        lobes = smooth_field(rng, canvas.labels[sl].shape, grid.spacing, 0.7 * r)
        radius = np.sqrt(ellipsoid_r2(d, y, x, center, radii, angle)) / (1.0 + 0.12 * lobes)  # type: ignore[arg-type]
        edge_voxels = min(radii) / min(grid.spacing)
        free = np.isin(roles[sl], _ALLOWED[kind]) & (canvas.labels[sl] == 0)  # lesions do not overlap
        weight = np.clip((1.0 - radius) * edge_voxels + 0.5, 0.0, 1.0) * free
        inside = weight >= 0.5
        if not inside.any():
            continue
        host_hu = float(hu[sl][inside].mean())
        lesion = Lesion(
            len(lesions) + 1, kind, center, radii, suv_value, float(_lesion_hu(kind, phase, host_hu, muscle_hu, rng)), host_hu
        )  # type: ignore[arg-type]
        lesion_hu = np.full(weight.shape, lesion.hu, np.float32)
        lesion_suv = np.full(weight.shape, lesion.suv, np.float32)
        if necrosis:
            core = radius < 0.5
            lesion_hu[core] = rng.uniform(10.0, 25.0)
            lesion_suv[core] = rng.uniform(0.5, 1.5)
        w = weight.astype(np.float32)
        hu[sl] = (1.0 - w) * hu[sl] + w * (lesion_hu + texture[sl])
        suv[sl] = (1.0 - w) * suv[sl] + w * lesion_suv
        canvas.paint(sl, inside, lesion.label, over=[0])
        lesions.append(lesion)
    return canvas.labels, lesions
