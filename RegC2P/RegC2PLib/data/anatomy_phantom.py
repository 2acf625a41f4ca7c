"""Synthetic FDG PET/CT patients built on real anatomy: a labelled CT, deformed, re-scanned, given uptake.

Each case of :func:`generate_anatomy_case` takes one real CT with organ labels
(:mod:`.anatomy_source`) and makes a new patient from it:

1. a random smooth deformation and scaling of the CT (trilinear) and its voxel roles
   (nearest neighbour), with organs grown or shrunk (:mod:`.random_warp`);
2. a new CT appearance: contrast phase, fatty liver, reconstruction kernel, noise (:mod:`.ct_look`);
3. FDG uptake painted from the roles with this patient's SUVs (:mod:`.anatomy_roles`; the
   whole-body phantom's published ranges), textured within organs, 0 outside the body and
   on the couch;
4. lesions with matching CT contrast (:mod:`.anatomy_lesions`);
5. the PET formed on a coarser grid with resolution blur and noise, and misaligned by the
   whole-body phantom's model (breathing + RegGAN affine; :mod:`.misalignment`), the
   aligned PET kept as ground truth.

The output geometry is axial LPS with identity direction, the source spacing, the body
centred in-plane and the top slice at z = 0. Separate random streams per aspect: the same
seed gives the same voxels, and e.g. another misalignment level leaves the CT as it was.
:class:`AnatomyMaker` plugs the source into :func:`~.phantom.write_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from .anatomy_lesions import insert_lesions
from .anatomy_roles import BONE_ROLES, BOWEL_ROLES, PHASE_HU, PHASES, TEXTURE, Role, draw_role_suv, tissue_lookup
from .anatomy_source import Anatomy, find_anatomies, load_anatomy
from .ct_look import KERNELS, CtLook, apply_kernel_and_noise, apply_phase, check_choices, draw_ct_look
from .misalignment import Misalignment
from .pet_physics import noise_field, scan, smooth_field
from .phantom import SUV_CAP, ScanSettings, pet_grid_for
from .phantom_anatomy import tissue_values
from .phantom_grid import Grid
from .phantom_lesions import Lesion
from .random_warp import Warp, WarpSettings, draw_warp

# Organ growth per patient (output / source size about the organ's centre).
ORGAN_SCALES: dict[int, tuple[float, float]] = {
    int(Role.LIVER): (0.9, 1.12),
    int(Role.SPLEEN): (0.85, 1.2),
    int(Role.KIDNEY): (0.9, 1.12),
    int(Role.BLADDER): (0.7, 1.35),  # filling
}
APEX_ABOVE_DOME_MM = 220.0  # typical lung apex to diaphragm dome, when the apex is not in view


@dataclass(frozen=True)
class AnatomyPhantomConfig(ScanSettings):
    """How anatomy phantoms are made: :class:`~.phantom.ScanSettings` (misalignment, PET,
    lesion count) plus the CT look and the deformation. ``phases`` and ``kernels`` are drawn
    uniformly per case, ``ct_noise_hu`` is the range of added CT noise SD, ``warp`` the
    deformation ranges."""

    phases: tuple[str, ...] = PHASES
    kernels: tuple[str, ...] = KERNELS
    ct_noise_hu: tuple[float, float] = (0.0, 20.0)
    warp: WarpSettings = field(default_factory=lambda: WarpSettings(organ_scales=dict(ORGAN_SCALES)))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self.phases, self.kernels)
        if not 0 <= self.ct_noise_hu[0] <= self.ct_noise_hu[1] <= 200:
            raise InputError(f"CT noise range {self.ct_noise_hu} HU is not usable; give 0 <= MIN <= MAX <= 200")


@dataclass
class AnatomyCase:
    """One synthetic study on real anatomy; images as in :class:`~.phantom.PhantomCase`
    (``organs`` in :class:`~.phantom_anatomy.Tissue` numbering), ``roles`` the voxel roles (uint8 array)."""

    seed: int
    anatomy: dict[str, object]
    ct: sitk.Image
    pet: sitk.Image
    pet_aligned: sitk.Image
    lesions: sitk.Image
    organs: sitk.Image
    roles: np.ndarray
    lesion_list: list[Lesion]
    misalignment: Misalignment
    warp: Warp
    look: CtLook
    role_suv: np.ndarray
    config: AnatomyPhantomConfig

    def metadata(self) -> dict[str, object]:
        """JSON-ready description: seed, anatomy, config, deformation, CT look, lesions, misalignment, per-organ HU and SUV."""
        hu = sitk.GetArrayViewFromImage(self.ct)
        counts = np.bincount(self.roles.ravel(), minlength=256)
        sums = np.bincount(self.roles.ravel(), weights=hu.ravel(), minlength=256)
        organs = {
            Role(r).name.lower(): {
                "voxels": int(counts[r]),
                "hu": round(float(sums[r] / counts[r]), 1),
                "suv": float(self.role_suv[r]),
            }
            for r in np.flatnonzero(counts)
        }
        return {
            "seed": self.seed,
            "generator": "anatomy",
            "anatomy": self.anatomy,
            "config": self.config.to_dict(),
            "units": {"ct": "HU", "pet": "SUVbw", "pet_aligned": "SUVbw"},
            "deformation": {
                **self.warp.describe(),
                "organ_scales": {Role(k).name.lower(): v for k, v in self.warp.organ_scales.items()},
            },
            "ct_look": self.look.to_dict(),
            "lesions": [lesion.to_dict() for lesion in self.lesion_list],
            "misalignment": self.misalignment.to_dict(),
            "organs": organs,
        }


def source_medians(anatomy: Anatomy) -> dict[Role, float]:
    """Median HU of each enhancing role in the source CT (what :func:`~.ct_look.apply_phase` moves from)."""
    medians = {role: anatomy.median_hu(role) for role in PHASE_HU}
    return {role: m for role, m in medians.items() if m is not None}


def output_grid(roles: np.ndarray, spacing: tuple[float, float, float]) -> Grid:
    """Identity-direction grid for a deformed anatomy: top slice at z = 0, body centred in-plane."""
    body = np.isin(roles, [Role.OUTSIDE, Role.COUCH], invert=True)
    nz = roles.shape[0]
    _, cy, cx = ndimage.center_of_mass(body) if body.any() else (0.0, (roles.shape[1] - 1) / 2.0, (roles.shape[2] - 1) / 2.0)
    return Grid(roles.shape, spacing, (-(nz - 1) * spacing[0], -cy * spacing[1], -cx * spacing[2]))  # type: ignore[arg-type]


def breathing_landmarks(grid: Grid, roles: np.ndarray) -> tuple[float, float, float] | None:
    """Lung apex depth, diaphragm dome depth and spine centre y (mm) for the respiratory model,
    or None when neither liver nor lungs are in view (no breathing then)."""
    depth = grid.depth
    liver_k = np.flatnonzero((roles == Role.LIVER).any(axis=(1, 2)))
    lung_k = np.flatnonzero((roles == Role.LUNG).any(axis=(1, 2)))
    if liver_k.size:
        dome = float(depth[liver_k.max()])
    elif lung_k.size:
        dome = float(depth[lung_k.min()]) - 20.0
    else:
        return None
    apex = float(depth[lung_k.max()]) if lung_k.size else dome - APEX_ABOVE_DOME_MM
    if dome - apex < 100.0:
        apex = dome - APEX_ABOVE_DOME_MM
    k, j, i = np.nonzero(np.isin(roles, BONE_ROLES))
    central = (np.abs(grid.x[i]) < 30.0) & (np.abs(depth[k] - dome) < 40.0)
    spine_y = float(np.median(grid.y[j[central]])) if central.any() else 0.0
    return apex, dome, spine_y


def paint_activity(roles: np.ndarray, hu: np.ndarray, role_suv: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """True FDG activity (SUVbw, float32, (z, y, x)): the roles' SUVs, smooth texture within
    organs (bowel much more), lung uptake following lung density; 0 outside the body."""
    suv = role_suv[roles]
    soft = smooth_field(rng, grid.shape, grid.spacing, 30.0)
    bowel = smooth_field(rng, grid.shape, grid.spacing, 14.0)
    for role, amount in TEXTURE.items():
        mask = roles == role
        if role in BOWEL_ROLES:
            suv[mask] *= np.clip(1.0 + amount * bowel[mask], 0.5, 2.5)
        else:
            suv[mask] *= 1.0 + amount * soft[mask]
    lung = roles == Role.LUNG
    if lung.any():
        density = hu[lung] + 1000.0
        suv[lung] *= np.clip(density / max(float(np.median(density)), 1.0), 0.3, 3.0)
    suv[np.isin(roles, [Role.OUTSIDE, Role.COUCH])] = 0.0
    return suv


def generate_anatomy_case(anatomy: Anatomy, config: AnatomyPhantomConfig, seed: int) -> AnatomyCase:
    """Make one patient from ``anatomy`` (see the module docstring)."""
    rng_warp, rng_values, rng_look, rng_texture, rng_lesions, rng_ct, rng_noise, rng_motion = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(8)
    )
    warp = draw_warp(rng_warp, anatomy.roles, anatomy.spacing, config.warp)
    hu = warp.apply(anatomy.hu, order=1, fill=-1024.0)
    roles = warp.apply(anatomy.roles, order=0, fill=float(Role.OUTSIDE))
    grid = output_grid(roles, anatomy.spacing)
    role_suv = draw_role_suv(tissue_values(rng_values), rng_values)
    suv = paint_activity(roles, hu, role_suv, grid, rng_texture)
    look = draw_ct_look(rng_look, config.phases, config.kernels, config.ct_noise_hu)
    apply_phase(hu, roles, source_medians(anatomy), look)
    count = int(rng_lesions.integers(config.lesions[0], config.lesions[1] + 1))
    lesion_map, lesions = insert_lesions(grid, roles, hu, suv, look.phase, count, rng_lesions)
    np.clip(suv, 0.0, SUV_CAP, out=suv)
    hu = apply_kernel_and_noise(hu, grid.spacing, look, rng_ct)

    landmarks = breathing_landmarks(grid, roles)
    apex, dome, spine_y = landmarks or (0.0, 0.0, 0.0)
    ext = grid.extent_mm()
    motion = Misalignment.draw(
        rng_motion, config.misalign, config.breathing_mm if landmarks else 0.0, (ext[1], ext[2]), (0.0, 0.0), apex, dome, spine_y
    )
    pet_grid = pet_grid_for(grid, config.pet_pixel_mm, config.pet_slice_mm)
    noise = noise_field(rng_noise, pet_grid.shape)
    aligned, moved = scan(
        suv,
        grid,
        pet_grid,
        config.pet_fwhm_mm,
        noise,
        config.pet_noise,
        None if motion.is_identity else motion.source_points,
        silent_outside=True,
    )
    couch = covers(roles == Role.COUCH, grid, pet_grid)  # blur reaches a couch close to the back: not on it
    aligned[couch] = 0.0
    moved[couch] = 0.0
    return AnatomyCase(
        seed=int(seed),
        anatomy=anatomy.describe(),
        ct=grid.image(hu),
        pet=pet_grid.image(moved),
        pet_aligned=pet_grid.image(aligned),
        lesions=grid.image(lesion_map),
        organs=grid.image(tissue_lookup()[roles]),
        roles=roles,
        lesion_list=lesions,
        misalignment=motion,
        warp=warp,
        look=look,
        role_suv=role_suv,
        config=config,
    )


def covers(mask: np.ndarray, grid: Grid, coarse: Grid) -> np.ndarray:
    """Voxels of the ``coarse`` grid that hold the centre of any ``mask`` voxel of ``grid`` (bool;
    a centre on a voxel border, to rounding, counts for both voxels)."""
    k, j, i = np.nonzero(mask)
    out = np.zeros(coarse.shape, bool)
    if k.size:
        index = coarse.to_index(grid.depth[k], grid.y[j], grid.x[i])
        sides = [(np.ceil(v - 0.5 - 1e-6), np.floor(v + 0.5 + 1e-6)) for v in index]
        for a in sides[0]:
            for b in sides[1]:
                for c in sides[2]:
                    out[tuple(np.clip(v.astype(int), 0, n - 1) for v, n in zip((a, b, c), coarse.shape))] = True
    return out


_LOADED: dict[str, list[Anatomy]] = {}


def load_anatomies(folder: str | os.PathLike[str]) -> list[Anatomy]:
    """The anatomies of ``folder`` (:func:`~.anatomy_source.find_anatomies`), loaded once per process."""
    key = str(Path(folder).resolve())
    if key not in _LOADED:
        _LOADED[key] = [load_anatomy(f) for f in find_anatomies(folder)]
    return _LOADED[key]


@dataclass(frozen=True)
class AnatomyMaker:
    """:class:`~.phantom.CaseMaker` of anatomy phantoms: case ``i`` uses anatomy ``i mod n``
    of ``folder``. Only the path travels to worker processes; each loads the anatomies once."""

    folder: str
    config: AnatomyPhantomConfig = field(default_factory=AnatomyPhantomConfig)

    def __call__(self, index: int, seed: int) -> AnatomyCase:
        anatomies = load_anatomies(self.folder)
        return generate_anatomy_case(anatomies[index % len(anatomies)], self.config, seed)

    def describe(self) -> dict[str, object]:
        return {
            "generator": "RegC2P anatomy phantom",
            "anatomy": self.folder,
            "anatomies": [a.name for a in load_anatomies(self.folder)],
            "config": self.config.to_dict(),
        }

    def memory_bytes(self) -> None:
        """Unknown before the anatomies are read: their CTs set the grid."""
        return None
