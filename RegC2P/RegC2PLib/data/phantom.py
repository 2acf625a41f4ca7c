"""Synthetic whole-body FDG PET/CT phantoms with realistic misalignment.

:func:`generate_case` builds one patient from a seed: tissue labels head to upper
thigh (:mod:`.phantom_anatomy`), lesions (:mod:`.phantom_lesions`), a CT in HU, the
aligned PET in SUVbw (ground truth) and the misaligned PET a model trains on
(:mod:`.misalignment`), both formed by :mod:`.pet_physics` on a coarser PET grid.
:func:`write_dataset` writes cases in the study layout of :mod:`.studies`.

Geometry: identity direction (LPS, axial slices, slice index grows towards the head),
the vertex of the skull 10 mm below the top of the field of view, the body centred
in-plane. The same seed gives the same voxels on any machine with the same numpy.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import values
from ..atomic import temporary_folder, write_json
from ..errors import InputError
from ..memory import require_memory
from ..progress import ProgressCallback, no_progress
from ..volume_checks import SPACING_RANGE_MM
from ..volume_io import write_image
from .misalignment import Misalignment
from .pet_physics import noise_field, scan, smooth_field
from .phantom_anatomy import EQUIPMENT, BodyPlan, Tissue, TissueValues, draw_body_plan, paint_anatomy, tissue_values
from .phantom_grid import Grid
from .phantom_lesions import Lesion, place_lesions

BODY_LENGTH_MM = 940.0  # vertex to upper thigh: the default field of view along z
BODY_WIDTH_MM = 520.0  # default in-plane field of view
TOP_MARGIN_MM = 10.0
SUV_CAP = 40.0  # bladder and renal pelvis are clipped here


@dataclass(frozen=True)
class ScanSettings:
    """What every phantom source shares: the misalignment (``misalign`` is RegGAN's noise
    level L, 0 = none; ``breathing_mm`` the largest diaphragm shift, drawn per case in 30-100 %
    of it, 0 = none), PET formation (resolution FWHM, pixel and slice size in mm, never finer
    than the CT; noise level) and the lesion count range."""

    misalign: float = 2.0
    breathing_mm: float = 10.0
    pet_fwhm_mm: float = 6.0
    pet_pixel_mm: float = 4.0
    pet_slice_mm: float = 4.0
    pet_noise: float = 0.15
    lesions: tuple[int, int] = (2, 5)

    def __post_init__(self) -> None:
        try:
            self._validate()
        except ValueError as exc:
            raise InputError(f"phantom: {exc}") from exc

    def _validate(self) -> None:
        """Raise ``ValueError`` naming the first unusable value."""
        values.finite("misalignment level", self.misalign, 0.0, 10.0)
        values.finite("breathing shift (mm)", self.breathing_mm, 0.0, 40.0)
        values.finite("PET FWHM (mm)", self.pet_fwhm_mm, 0.0, 50.0, low_open=True)
        values.finite("PET pixel size (mm)", self.pet_pixel_mm, 0.0, 50.0, low_open=True)
        values.finite("PET slice thickness (mm)", self.pet_slice_mm, 0.0, 50.0, low_open=True)
        values.finite("PET noise level", self.pet_noise, 0.0, 10.0)
        if not isinstance(self.lesions, tuple) or len(self.lesions) != 2:
            raise ValueError(f"lesion count range {self.lesions} is not usable; give MIN MAX")
        low = values.whole("the lesion count MIN", self.lesions[0], 0, 255)
        values.whole("the lesion count MAX", self.lesions[1], low, 255)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PhantomConfig(ScanSettings):
    """How whole-body phantoms are made: :class:`ScanSettings` plus the CT grid and noise.
    Shapes and spacings are (z, y, x); lengths in mm.

    ``spacing`` None fits the body: z covers vertex to upper thigh (940 mm), in-plane 520 mm.
    """

    shape: tuple[int, int, int] = (96, 128, 128)
    spacing: tuple[float, float, float] | None = None
    ct_noise_hu: float = 10.0

    def _validate(self) -> None:
        if not isinstance(self.shape, tuple) or len(self.shape) != 3:
            raise ValueError(f"shape {self.shape} is not usable; give three sizes Z Y X")
        for size in self.shape:
            values.whole("each size of the shape", size, 8, 1024)
        if self.spacing is not None:
            if not isinstance(self.spacing, tuple) or len(self.spacing) != 3:
                raise ValueError(f"spacing {self.spacing} is not usable; give three sizes Z Y X in mm")
            for size in self.spacing:
                values.finite("each spacing (mm)", size, *SPACING_RANGE_MM)
        super()._validate()
        values.finite("CT noise (HU)", self.ct_noise_hu, 0.0, 1000.0)

    def memory_bytes(self) -> int:
        """Peak memory of generating one case: 34 bytes per CT voxel and 40 per PET voxel, plus
        64 MiB (fitted to ``ru_maxrss`` at 96x128x128 to 256x512x512 CT voxels; 1.1-1.35x the measured peaks)."""
        return 34 * math.prod(self.shape) + 40 * math.prod(self.pet_grid().shape) + 64 * 2**20

    def ct_grid(self) -> Grid:
        """The CT grid: field of view from just above the vertex downwards, centred in-plane."""
        nz, ny, nx = self.shape
        if self.spacing is None:
            pixel = BODY_WIDTH_MM / max(ny, nx)
            spacing = (BODY_LENGTH_MM / nz, pixel, pixel)
        else:
            spacing = tuple(float(s) for s in self.spacing)
        top = TOP_MARGIN_MM - spacing[0] / 2.0
        origin = (top - (nz - 1) * spacing[0], -(ny - 1) / 2.0 * spacing[1], -(nx - 1) / 2.0 * spacing[2])
        return Grid((nz, ny, nx), spacing, origin)  # type: ignore[arg-type]

    def pet_grid(self) -> Grid:
        return pet_grid_for(self.ct_grid(), self.pet_pixel_mm, self.pet_slice_mm)


def pet_grid_for(ct: Grid, pixel_mm: float, slice_mm: float) -> Grid:
    """The PET grid over ``ct``'s field of view: ``pixel_mm`` pixels and ``slice_mm`` slices, never finer than the CT."""
    s = ct.spacing
    return ct.resampled((max(slice_mm, s[0]), max(pixel_mm, s[1]), max(pixel_mm, s[2])))


class StudyCase(Protocol):
    """A generated study as :func:`write_case` writes it: SimpleITK images and a JSON description."""

    ct: sitk.Image
    pet: sitk.Image
    pet_aligned: sitk.Image
    lesions: sitk.Image
    organs: sitk.Image

    def metadata(self) -> dict[str, object]: ...


class CaseMaker(Protocol):
    """Makes case ``index`` of a dataset from its seed (picklable, for worker processes)."""

    def __call__(self, index: int, seed: int) -> StudyCase: ...

    def describe(self) -> dict[str, object]:
        """The generator's name and configuration, for ``phantom_dataset.json``."""
        ...

    def memory_bytes(self) -> int | None:
        """Peak memory of making one case, or None when it is known only once the case's input is read."""
        ...


@dataclass
class PhantomCase:
    """One synthetic study. Images are SimpleITK, float32 unless noted.

    ``ct`` HU on the CT grid; ``pet`` misaligned SUVbw (what training sees) and
    ``pet_aligned`` ground-truth SUVbw, both on the coarser PET grid; ``lesions``
    uint8 (one label per lesion) and ``organs`` uint8 (:class:`Tissue` labels), both
    on the CT grid.
    """

    seed: int
    ct: sitk.Image
    pet: sitk.Image
    pet_aligned: sitk.Image
    lesions: sitk.Image
    organs: sitk.Image
    lesion_list: list[Lesion]
    misalignment: Misalignment
    plan: BodyPlan
    values: TissueValues
    config: PhantomConfig

    def metadata(self) -> dict[str, object]:
        """JSON-ready description: seed, config, lesions, misalignment, tissue values."""
        return {
            "seed": self.seed,
            "config": self.config.to_dict(),
            "units": {"ct": "HU", "pet": "SUVbw", "pet_aligned": "SUVbw"},
            "lesions": [lesion.to_dict() for lesion in self.lesion_list],
            "misalignment": self.misalignment.to_dict(),
            "tissues": {t.name.lower(): {"hu": float(self.values.hu[t]), "suv": float(self.values.suv[t])} for t in Tissue},
            "body": {"length_scale": self.plan.length, "width_scale": self.plan.width, "fat_mm": self.plan.fat_mm},
        }


def _check_seed(seed: int) -> None:
    try:
        values.seed("the phantom seed", seed)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset made with ``seed`` (independent of the case count)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def generate_case(config: PhantomConfig, seed: int) -> PhantomCase:
    """Generate one patient. Anatomy, lesions, noise and misalignment use separate random
    streams of ``seed``, so changing the misalignment leaves the CT and aligned PET as they were."""
    _check_seed(seed)
    shape = "x".join(map(str, config.shape))
    require_memory(config.memory_bytes(), f"generating a phantom of {shape} voxels", "use a smaller --shape")
    rng_body, rng_values, rng_lesions, rng_texture, rng_noise, rng_motion = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)
    )
    grid = config.ct_grid()
    plan = draw_body_plan(rng_body)
    values = tissue_values(rng_values)
    labels = paint_anatomy(grid, plan)
    count = int(rng_lesions.integers(config.lesions[0], config.lesions[1] + 1))
    lesion_map, lesions = place_lesions(grid, labels, plan, values, count, rng_lesions)

    hu, suv = _ct_and_activity(grid, labels, lesion_map, lesions, values, config, rng_texture)

    pet_grid = config.pet_grid()
    ext = grid.extent_mm()
    motion = Misalignment.draw(
        rng_motion,
        config.misalign,
        config.breathing_mm,
        (ext[1], ext[2]),
        (float(grid.y.mean()), float(grid.x.mean())),
        plan.apex,
        plan.dome_right,
        float(plan.spine_y(np.array([plan.dome_right]))[0]),
    )
    noise = noise_field(rng_noise, pet_grid.shape)
    move = None if motion.is_identity else motion.source_points
    aligned, moved = scan(suv, grid, pet_grid, config.pet_fwhm_mm, noise, config.pet_noise, move)

    return PhantomCase(
        seed=int(seed),
        ct=grid.image(hu),
        pet=pet_grid.image(moved),
        pet_aligned=pet_grid.image(aligned),
        lesions=grid.image(lesion_map),
        organs=grid.image(labels),
        lesion_list=lesions,
        misalignment=motion,
        plan=plan,
        values=values,
        config=config,
    )


def _ct_and_activity(
    grid: Grid,
    labels: np.ndarray,
    lesion_map: np.ndarray,
    lesions: list[Lesion],
    values: TissueValues,
    config: PhantomConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """CT (HU) and true activity (SUV) on the CT grid, float32 (z, y, x)."""
    soft = smooth_field(rng, grid.shape, grid.spacing, 30.0)
    fine = smooth_field(rng, grid.shape, grid.spacing, 10.0)
    bowel = smooth_field(rng, grid.shape, grid.spacing, 14.0)
    hu = values.hu[labels]
    suv = values.suv[labels]
    body = ~np.isin(labels, (Tissue.AIR, Tissue.AIRWAY, *EQUIPMENT))
    hu += np.where(body, 5.0 * soft, 0.0).astype(np.float32)
    blanket = labels == Tissue.BLANKET
    hu[blanket] += 150.0 * np.clip(fine[blanket] - 1.0, 0.0, None)  # folds of denser cloth
    lung = labels == Tissue.LUNG
    hu[lung] += 30.0 * fine[lung] + 120.0 * np.clip(fine[lung] - 1.5, 0.0, None)  # parenchyma and vessels
    abdomen = labels == Tissue.ABDOMEN
    hu[abdomen] += 25.0 * bowel[abdomen]
    hu[abdomen & (bowel < -1.4)] = values.hu[Tissue.FAT]  # mesenteric fat between the loops
    suv[abdomen] *= np.clip(1.0 + 0.45 * bowel[abdomen], 0.5, 2.5)  # bowel uptake varies
    for organ, amount in ((Tissue.LIVER, 0.06), (Tissue.SPLEEN, 0.06), (Tissue.MUSCLE, 0.12), (Tissue.BONE_MARROW, 0.1)):
        mask = labels == organ
        suv[mask] *= 1.0 + amount * soft[mask]
    for lesion in lesions:
        mask = lesion_map == lesion.label
        hu[mask] = lesion.hu
        suv[mask] = lesion.suv
    np.minimum(suv, SUV_CAP, out=suv)
    np.maximum(suv, 0.0, out=suv)
    # CT: slight blur (partial volume at organ edges), then quantum noise.
    sigma = [max(0.3, 0.6 / s) for s in grid.spacing]
    hu = ndimage.gaussian_filter(hu, [min(v, 0.6) for v in sigma], mode="nearest")
    hu += config.ct_noise_hu * rng.standard_normal(hu.shape, dtype=np.float32)
    np.maximum(hu, -1024.0, out=hu)
    return hu.astype(np.float32, copy=False), suv.astype(np.float32, copy=False)


def write_case(case: StudyCase, folder: str | os.PathLike[str]) -> None:
    """Write one case as a study folder (``ct``, ``pet``, ``pet_aligned``, ``lesions``,
    ``organs`` .nii.gz and ``phantom.json``), atomically: a temporary folder beside it
    is renamed into place, so a study folder is either complete or absent."""
    folder = Path(folder)
    with temporary_folder(folder.parent) as tmp, temporary_folder(folder.parent) as trash:
        for name, image in (
            ("ct.nii.gz", case.ct),
            ("pet.nii.gz", case.pet),
            ("pet_aligned.nii.gz", case.pet_aligned),
            ("lesions.nii.gz", case.lesions),
            ("organs.nii.gz", case.organs),
        ):
            write_image(image, tmp / name)
        write_json(tmp / "phantom.json", case.metadata(), indent=1)
        if folder.exists():
            folder.rename(trash / folder.name)  # removed with the trash folder
        tmp.rename(folder)


@dataclass(frozen=True)
class WholeBodyMaker:
    """:class:`CaseMaker` of the whole-body phantom (:func:`generate_case`)."""

    config: PhantomConfig

    def __call__(self, index: int, seed: int) -> PhantomCase:
        return generate_case(self.config, seed)

    def describe(self) -> dict[str, object]:
        return {"generator": "RegC2P phantom", "config": self.config.to_dict()}

    def memory_bytes(self) -> int:
        return self.config.memory_bytes()


def _make_and_write(maker: CaseMaker, index: int, seed: int, folder: str) -> str:
    write_case(maker(index, seed), folder)
    return folder


def write_dataset(
    out_dir: str | os.PathLike[str],
    n_cases: int,
    config: PhantomConfig | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    workers: int = 1,
    overwrite: bool = False,
    maker: CaseMaker | None = None,
) -> list[Path]:
    """Write ``n_cases`` studies ``case_0000`` ... into ``out_dir`` (created if needed).

    Case ``i`` uses :func:`case_seed` ``(seed, i)``. Cases come from ``maker`` when given
    (e.g. the anatomy phantom), else from the whole-body phantom with ``config``.
    ``workers`` > 1 generates cases in parallel processes (same files). Existing case
    folders are refused unless ``overwrite``. Also writes ``phantom_dataset.json``
    (generator, config, seed, case seeds). Returns the study folders.
    """
    if maker is not None and config is not None:
        raise ValueError("give either a whole-body phantom config or a case maker, not both")
    maker = maker or WholeBodyMaker(config or PhantomConfig())
    progress = progress or no_progress
    if n_cases < 1:
        raise InputError(f"--cases is {n_cases}; ask for at least one case")
    if workers < 1:
        raise InputError(f"--workers is {workers}; use at least one process")
    _check_seed(seed)
    parallel = min(workers, n_cases)
    per_case = maker.memory_bytes()
    if per_case is not None:
        require_memory(
            parallel * per_case,
            f"generating {parallel} phantom{'s' if parallel > 1 else ''} at once",
            "use fewer --workers or a smaller --shape",
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the phantom dataset")
    out.mkdir(parents=True, exist_ok=True)
    folders = [out / f"case_{i:04d}" for i in range(n_cases)]
    existing = [f.name for f in folders if f.exists()]
    if existing and not overwrite:
        raise InputError(
            f"{out} already holds {existing[0]} (and {len(existing) - 1} more); choose an empty folder or overwrite (--overwrite)"
        )
    seeds = [case_seed(seed, i) for i in range(n_cases)]
    start = time.perf_counter()
    progress(0.0, f"generating {n_cases} phantom cases")
    if workers > 1 and n_cases > 1:
        with ProcessPoolExecutor(max_workers=min(workers, n_cases)) as pool:
            futures = [pool.submit(_make_and_write, maker, i, s, str(f)) for i, (s, f) in enumerate(zip(seeds, folders))]
            for done, future in enumerate(futures, 1):
                future.result()
                progress(done / n_cases, f"wrote {folders[done - 1].name}")
    else:
        for done, (s, f) in enumerate(zip(seeds, folders), 1):
            _make_and_write(maker, done - 1, s, str(f))
            progress(done / n_cases, f"wrote {f.name}")
    summary = {
        **maker.describe(),
        "seed": int(seed),
        "n_cases": n_cases,
        "cases": {f.name: s for f, s in zip(folders, seeds)},
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(out / "phantom_dataset.json", summary, indent=1)
    return folders
