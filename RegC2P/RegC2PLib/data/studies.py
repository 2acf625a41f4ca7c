"""The dataset folder layout: one sub-folder per PET/CT study.

::

    DATASET/
      patient_001/
        ct.nii.gz            CT in HU (any SimpleITK format) or ct/ = a DICOM folder (tree)
        pet.nii.gz           PET in SUVbw, or pet/ = a PET DICOM folder (converted to SUVbw)
        pet_aligned.nii.gz   optional: PET aligned with the CT (ground truth, phantoms only)
        lesions.nii.gz       optional: lesion label map (a volume file)
        study.json           optional: {"suv_factor": F} (SUV per rescaled PET value) when the PET
                             is in Bq/ml or its DICOM header lacks what SUVbw needs;
                             {"ct_series": ID, "pet_series": ID} to choose DICOM series
      patient_002/
        dicom/               a PACS export (any tree): supplies the CT and the PET that the
                             study does not give as ct.* / pet.*

:func:`discover_studies` finds the studies and reports every folder it cannot use and
why; :func:`load_study` reads one study and resamples the PET (and the optional
volumes) onto the CT grid by physical coordinates (origin, direction and spacing of
each image honoured), refusing a CT and a PET that do not overlap in space.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume_io import WRITABLE_SUFFIXES, check_ct, check_volume, read_image, resample_onto, to_axial
from .dicom_series import read_ct_series
from .dicom_suv import read_pet_suv

ROLES = ("ct", "pet", "pet_aligned", "lesions")
REQUIRED = ("ct", "pet")
DICOM_FOLDER = "dicom"  # a DICOM tree supplying the CT and the PET
STUDY_JSON_KEYS = {"suv_factor", "ct_series", "pet_series"}
SUV_PLAUSIBLE_MAX = 500.0  # above this a "SUV" PET is almost surely Bq/ml
SUV_PLAUSIBLE_MIN = -10.0  # reconstruction noise dips a little below 0 SUV; far below, the values are not SUV
MIN_COVERAGE = 0.5  # a CT slice is used (trained on, scored) when at least half of it lies in the PET field of view


@dataclass(frozen=True)
class Study:
    """Paths of one study. ``ct``/``pet`` are files or DICOM folders (both may be the
    same ``dicom/`` tree); ``ct_series``/``pet_series`` choose among several DICOM series
    (UID or series number; from ``study.json``)."""

    name: str
    folder: Path
    ct: Path
    pet: Path
    pet_aligned: Path | None = None
    lesions: Path | None = None
    suv_factor: float | None = None
    ct_series: str | None = None
    pet_series: str | None = None

    def sources(self) -> list[Path]:
        """Every input file of the study (DICOM folders expanded), for cache keys."""
        files: list[Path] = []
        for path in dict.fromkeys((self.ct, self.pet, self.pet_aligned, self.lesions, self.folder / "study.json")):
            if path is None or not path.exists():
                continue
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
            else:
                files.append(path)
                if path.name.lower().endswith(".mhd"):  # header + raw data file
                    files.extend(sorted(path.parent.glob(path.name[: -len(".mhd")] + ".*raw")))
        return files


@dataclass(frozen=True)
class Skipped:
    """A study (or file) that was not used, and why."""

    name: str
    reason: str


@dataclass
class LoadedStudy:
    """One study on the CT grid, reoriented to axial LPS: ``ct`` HU, ``pet``/``pet_aligned`` SUVbw (float32),
    ``lesions`` (uint8 or None); ``coverage`` (nz,) is the fraction of each CT slice
    inside the PET field of view."""

    name: str
    ct: sitk.Image
    pet: sitk.Image
    pet_aligned: sitk.Image | None
    lesions: sitk.Image | None
    coverage: np.ndarray


def _role_of(path: Path) -> tuple[str, bool] | None:
    """(role, is_dicom_folder) of a study-folder entry, or None if it is not a study volume.
    The role of a ``dicom/`` folder is :data:`DICOM_FOLDER`."""
    lower = path.name.lower()
    if path.is_dir():
        return (lower, True) if lower in (*ROLES, DICOM_FOLDER) else None
    for suffix in WRITABLE_SUFFIXES:
        if lower.endswith(suffix):
            stem = lower[: -len(suffix)]
            return (stem, False) if stem in ROLES else None
    return None


def _find_volumes(folder: Path) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        role = _role_of(entry)
        if role is not None:
            found.setdefault(role[0], []).append(entry)
    for role, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise InputError(f"it holds several {role} volumes ({names}); keep one")
    volumes = {role: paths[0] for role, paths in found.items()}
    if "lesions" in volumes and volumes["lesions"].is_dir():
        raise InputError("its lesions/ is a folder; give the lesion map as a volume file (lesions.nii.gz, .nrrd, ...)")
    tree = volumes.pop(DICOM_FOLDER, None)
    if tree is not None:
        for role in REQUIRED:
            volumes.setdefault(role, tree)
    return volumes


def _read_study_json(folder: Path) -> dict[str, object]:
    """The study's ``study.json`` (``suv_factor``, ``ct_series``, ``pet_series``), checked; {} when absent."""
    path = folder / "study.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"its study.json is not valid JSON ({exc}); fix it or remove it") from exc
    if not isinstance(data, dict) or set(data) - STUDY_JSON_KEYS:
        raise InputError('its study.json may only hold "suv_factor" (a number), "ct_series" and "pet_series" (UID or number)')
    factor = data.get("suv_factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0):
        raise InputError(f"its study.json suv_factor {factor!r} must be a positive number")
    for key in ("ct_series", "pet_series"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip()):
            raise InputError(f"its study.json {key} {value!r} must be a SeriesInstanceUID or a series number")
    return {
        "suv_factor": None if factor is None else float(factor),
        **{key: str(data[key]).strip() for key in ("ct_series", "pet_series") if data.get(key) is not None},
    }


def discover_studies(root: str | os.PathLike[str]) -> tuple[list[Study], list[Skipped]]:
    """Studies under ``root`` (sorted by name) and every sub-folder or volume file skipped, with the reason.

    Only the folder structure is checked here; unreadable files and mismatched geometry
    are found by :func:`load_study`. Folders whose names start with '.' are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the dataset folder holding one sub-folder per study")
    studies: list[Study] = []
    skipped: list[Skipped] = []
    entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    for entry in entries:
        if entry.is_file():
            if _role_of(entry) is not None or entry.name.lower().endswith(WRITABLE_SUFFIXES):
                skipped.append(
                    Skipped(entry.name, "a volume file directly in the dataset folder; put each study in its own sub-folder")
                )
            continue
        try:
            volumes = _find_volumes(entry)
            missing = [r for r in REQUIRED if r not in volumes]
            if missing:
                what = " and ".join(f"{r}.* (or a {r}/ DICOM folder)" for r in missing)
                raise InputError(f"it has no {what}; add it (or a dicom/ folder with the series) or move the folder away")
            for path in set(volumes.values()):
                if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
                    raise InputError(f"its {path.name}/ folder is empty; put the DICOM series there or remove the folder")
            options = _read_study_json(entry)
        except InputError as exc:
            skipped.append(Skipped(entry.name, str(exc)))
            continue
        studies.append(
            Study(entry.name, entry, volumes["ct"], volumes["pet"], volumes.get("pet_aligned"), volumes.get("lesions"), **options)  # type: ignore[arg-type]
        )
    if not studies and not skipped:
        raise InputError(
            f"{root} holds no study folders; put each study in its own sub-folder with ct.* and pet.* (see docs/datasets.md)"
        )
    return studies, skipped


def skipped_summary(skipped: list[Skipped]) -> str:
    """Multi-line list of skipped studies, '' when none."""
    if not skipped:
        return ""
    lines = [f"skipped {len(skipped)} stud{'y' if len(skipped) == 1 else 'ies'}:"]
    lines += [f"  {s.name}: {s.reason}" for s in skipped]
    return "\n".join(lines)


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical box (LPS mm, low and high corner) of the image's voxels, edge to edge."""
    size = image.GetSize()
    corners = []
    for cx in (-0.5, size[0] - 0.5):
        for cy in (-0.5, size[1] - 0.5):
            for cz in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((cx, cy, cz)))
    points = np.array(corners)
    return points.min(0), points.max(0)


def check_overlap(ct: sitk.Image, other: sitk.Image, what: str) -> None:
    """Refuse ``other`` when its physical box does not intersect the CT's."""
    lo_a, hi_a = physical_bounds(ct)
    lo_b, hi_b = physical_bounds(other)
    overlap = np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b)
    if np.any(overlap <= 0):
        axis = "xyz"[int(np.argmin(overlap))]
        i = "xyz".index(axis)
        raise InputError(
            f"the CT and the {what} do not overlap in space (along {axis}, CT {lo_a[i]:.0f}..{hi_a[i]:.0f} mm, "
            f"{what} {lo_b[i]:.0f}..{hi_b[i]:.0f} mm); check that both belong to this study and keep their original origins"
        )


def _how_to_choose(key: str) -> str:
    return f'choose one with {{"{key}": "<SeriesInstanceUID or series number>"}} in the study\'s study.json'


def read_ct(path: Path, series: str | None = None) -> sitk.Image:
    """A CT as float32 HU: a volume file, or the CT series of a DICOM folder tree
    (``series`` chooses among several). SimpleITK applies the rescale slope/intercept.
    Refuses values that are not plausible HU."""
    image = read_ct_series(path, series, _how_to_choose("ct_series")).image if path.is_dir() else read_image(path)
    image = sitk.Cast(image, sitk.sitkFloat32)
    check_ct(image)
    return image


def read_pet(path: Path, suv_factor: float | None, what: str = "PET", series: str | None = None) -> sitk.Image:
    """A PET in SUVbw (float32): a DICOM folder tree via :func:`read_pet_suv` (``series``
    chooses among several attenuation-corrected series), a file as stored (SUV), or
    multiplied by ``suv_factor`` when the file holds Bq/ml."""
    if path.is_dir():
        image = read_pet_suv(path, suv_factor, series, _how_to_choose("pet_series"))
    else:
        image = sitk.Cast(read_image(path), sitk.sitkFloat32)
        if suv_factor is not None:
            image = image * float(suv_factor)
    check_pet_suv(image, what, 'or put {"suv_factor": <weight g / decayed dose Bq>} in the study\'s study.json')
    return image


def check_pet_suv(image: sitk.Image, what: str, remedy: str = "") -> None:
    """Refuse a PET that is not a 3D scalar volume of finite values or whose values are not
    plausible SUVs (above :data:`SUV_PLAUSIBLE_MAX`, i.e. most likely Bq/ml, or below
    :data:`SUV_PLAUSIBLE_MIN`); ``remedy`` ends the message."""
    check_volume(image, what)
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    if stats.GetMinimum() < SUV_PLAUSIBLE_MIN:
        raise InputError(
            f"the {what} goes down to {stats.GetMinimum():g}, not a plausible SUV (activity is never far below 0); "
            "check the file's rescale slope/intercept and units"
        )
    if stats.GetMaximum() > SUV_PLAUSIBLE_MAX:
        raise InputError(
            f"the {what} reaches {stats.GetMaximum():.0f}, not a plausible SUV (is it in Bq/ml?); "
            f"convert it to SUVbw{' ' + remedy if remedy else ' first'}"
        )


def load_study(study: Study) -> LoadedStudy:
    """Read a study: CT in HU; PET (and aligned PET, lesions) resampled onto the CT grid.

    Raises :class:`InputError` naming the study for unreadable files, implausible values,
    or volumes that do not overlap the CT.
    """
    try:
        ct = to_axial(read_ct(study.ct, study.ct_series))  # axial slices, as inference sees them
        pet = read_pet(study.pet, study.suv_factor, series=study.pet_series)
        check_overlap(ct, pet, "PET")
        coverage = _coverage(pet, ct)
        if coverage.max() <= 0:
            raise InputError("the PET field of view covers no CT voxel; check the PET and CT geometry")
        pet_on_ct = resample_onto(pet, ct, 0.0, linear=True)
        aligned = None
        if study.pet_aligned is not None:
            reference = read_pet(study.pet_aligned, study.suv_factor, "aligned PET")
            check_overlap(ct, reference, "aligned PET")
            aligned = resample_onto(reference, ct, 0.0, linear=True)
        lesions = None
        if study.lesions is not None:
            labels = read_image(study.lesions)
            check_volume(labels, "lesion map")
            check_overlap(ct, labels, "lesion map")
            lesions = sitk.Cast(resample_onto(labels, ct, 0.0, linear=False), sitk.sitkUInt8)
    except InputError as exc:
        raise InputError(f"study {study.name}: {exc}") from exc
    return LoadedStudy(study.name, ct, pet_on_ct, aligned, lesions, coverage)


def _coverage(pet: sitk.Image, ct: sitk.Image) -> np.ndarray:
    """Fraction of each CT slice (along the CT's third index) inside the PET field of view."""
    ones = sitk.Image(pet.GetSize(), sitk.sitkUInt8)
    ones.CopyInformation(pet)
    ones += 1
    inside = sitk.Resample(ones, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayViewFromImage(inside).reshape(ct.GetSize()[2], -1).mean(axis=1)
