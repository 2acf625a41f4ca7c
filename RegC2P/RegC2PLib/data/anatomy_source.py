"""Real CTs with organ labels ("anatomies") for the anatomy phantom: folder layouts, roles, checks.

An anatomy folder holds a CT in HU and its organ labels in one of two layouts::

    ANATOMY/                              ANATOMY/
      ct.nii.gz                             ct.nii.gz
      labels.nii.gz   (one integer          segmentations/        (TotalSegmentator's default
      label_names.json  per structure)        liver.nii.gz         output: one mask per
                                              kidney_left.nii.gz   structure, named by it)
                                              ...

``label_names.json`` maps label values to structure names, ``{"1": "spleen", "5": "liver", ...}``
(TotalSegmentator's class map of the task that made the labels). A folder whose
sub-folders are anatomies is a set of anatomies (:func:`find_anatomies`). The CT may be any
SimpleITK format or a DICOM series folder ``ct/``.

:func:`load_anatomy` returns the CT and a voxel *role* map (:mod:`.anatomy_roles`) in axial
LPS order: labelled structures by name, the rest by CT number, the patient couch and
anything else outside the body separated from the body, bone split into cortex and marrow,
a whole-heart label into wall and chambers, a brain label into grey and white matter and
CSF, and each kidney's collecting system marked. Labels on another grid than the CT's are
resampled onto it by physical coordinates and the anatomy is cut to the labels' field of
view, and to the slices that hold any label. Labels that do not fit the CT (lungs that are not air, bones that are not dense) are
refused with a one-line reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..body import BODY_THRESHOLD_HU, body_mask
from ..errors import InputError
from ..volume_io import WRITABLE_SUFFIXES, check_ct, check_volume, read_image, resample_onto, to_axial
from .anatomy_roles import (
    BOWEL_ROLES,
    CORTEX_FROM_HU,
    FAT_BELOW_HU,
    LUNG_BELOW_HU,
    WHOLE_BRAIN,
    WHOLE_HEART,
    Role,
    role_from_hu,
    role_of_name,
)

LABEL_NAMES = "label_names.json"
SEGMENTATIONS = "segmentations"
_HEART_WALL_MM = 10.0
_CORTEX_RIBBON_MM = 4.0
_MIN_CHECK_VOXELS = 30


@dataclass
class Anatomy:
    """One labelled CT in axial LPS order: ``hu`` float32 (z, y, x) HU, ``roles`` uint8
    :class:`Role` per voxel, ``spacing`` (z, y, x) mm. ``structures`` counts the voxels of
    each labelled structure used; ``unknown`` lists structure names with no role (painted
    from their CT number)."""

    name: str
    folder: Path
    hu: np.ndarray
    roles: np.ndarray
    spacing: tuple[float, float, float]
    structures: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def median_hu(self, role: Role) -> float | None:
        """Median CT number of the voxels of ``role`` (None if it has none)."""
        mask = self.roles == role
        return float(np.median(self.hu[mask])) if mask.any() else None

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: source folder, size, structures used and unknown."""
        return {
            "name": self.name,
            "folder": str(self.folder),
            "shape": list(self.hu.shape),
            "spacing": list(self.spacing),
            "structures": sorted(self.structures),
            "unknown_structures": self.unknown,
        }


def _volume_in(folder: Path, stem: str) -> Path | None:
    """The one volume named ``stem`` (any SimpleITK suffix, or a DICOM folder) in ``folder``."""
    found = [p for p in folder.iterdir() if p.name.lower() in {stem + s for s in WRITABLE_SUFFIXES}]
    if (folder / stem).is_dir():
        found.append(folder / stem)
    if len(found) > 1:
        raise InputError(f"anatomy {folder} holds several {stem} volumes ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def is_anatomy(folder: Path) -> bool:
    """Whether ``folder`` holds a CT (and so is meant as one anatomy)."""
    return folder.is_dir() and _volume_in(folder, "ct") is not None


def find_anatomies(folder: str | os.PathLike[str]) -> list[Path]:
    """The anatomy folders of ``folder``: itself if it holds a CT, else its sub-folders (sorted).

    Every sub-folder (hidden ones aside) must be an anatomy: a set of training anatomies
    with one unusable entry is refused rather than quietly used in part.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"anatomy folder {root} does not exist; give a folder with ct.nii.gz and its labels")
    if is_anatomy(root):
        return [root]
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise InputError(
            f"{root} holds no CT and no anatomy sub-folders; put ct.nii.gz with labels.nii.gz + {LABEL_NAMES} "
            f"or {SEGMENTATIONS}/ in it"
        )
    for sub in subs:
        if not is_anatomy(sub):
            raise InputError(f"anatomy {sub} holds no ct.nii.gz (or ct/ DICOM folder); add the CT or move the folder out")
    return subs


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )


def _read_label_image(path: Path, what: str) -> sitk.Image:
    image = read_image(path)
    check_volume(image, what)
    if image.GetPixelID() not in (
        sitk.sitkUInt8,
        sitk.sitkInt8,
        sitk.sitkUInt16,
        sitk.sitkInt16,
        sitk.sitkUInt32,
        sitk.sitkInt32,
        sitk.sitkUInt64,
        sitk.sitkInt64,
    ):
        raise InputError(f"{path} holds {image.GetPixelIDTypeAsString()} values; a label map must hold integers")
    return image


def _read_multilabel(folder: Path, path: Path) -> tuple[sitk.Image, dict[int, str]]:
    names_path = folder / LABEL_NAMES
    if not names_path.is_file():
        raise InputError(
            f"anatomy {folder} has {path.name} but no {LABEL_NAMES}; write the class map of the labels there "
            '({"1": "spleen", "5": "liver", ...}) or use the per-structure layout segmentations/'
        )
    try:
        raw = json.loads(names_path.read_text())
        names = {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{names_path} is not a JSON object of label value -> structure name ({exc}); fix it") from exc
    return _read_label_image(path, "label map"), names


def _read_segmentations(folder: Path) -> tuple[sitk.Image, dict[int, str]]:
    """Per-structure masks -> one label image (values 1..n in file-name order; later files win overlaps)."""
    seg = folder / SEGMENTATIONS
    files = sorted(p for p in seg.iterdir() if p.is_file() and p.name.lower().endswith(WRITABLE_SUFFIXES))
    if not files:
        raise InputError(f"{seg} holds no structure masks (<name>.nii.gz); run TotalSegmentator into it or remove it")
    first: sitk.Image | None = None
    labels: np.ndarray | None = None
    names: dict[int, str] = {}
    for value, path in enumerate(files, 1):
        image = _read_label_image(path, f"mask {path.name}")
        if first is None:
            first = image
            labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint16)
        elif not _same_grid(image, first):
            raise InputError(f"{path} is not on the grid of {files[0].name}; all structure masks must share one grid")
        labels[sitk.GetArrayViewFromImage(image) != 0] = value  # type: ignore[index]
        stem = next(path.name[: -len(s)] for s in WRITABLE_SUFFIXES if path.name.lower().endswith(s))
        names[value] = stem
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(first)  # type: ignore[arg-type]
    return out, names


def _read_labels(folder: Path) -> tuple[sitk.Image, dict[int, str]]:
    multi = _volume_in(folder, "labels")
    seg = folder / SEGMENTATIONS
    if multi is not None and seg.is_dir():
        raise InputError(f"anatomy {folder} holds both {multi.name} and {SEGMENTATIONS}/; keep one label layout")
    if multi is not None:
        return _read_multilabel(folder, multi)
    if seg.is_dir():
        return _read_segmentations(folder)
    raise InputError(
        f"anatomy {folder} has a CT but no labels; add labels.nii.gz + {LABEL_NAMES} or TotalSegmentator's {SEGMENTATIONS}/"
    )


def _labels_on_ct(labels: sitk.Image, ct: sitk.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Label values on the CT grid (int32, CT array order) and, when the label map has
    another grid, the CT voxels inside its field of view (else None)."""
    if _same_grid(labels, ct):
        return sitk.GetArrayFromImage(labels).astype(np.int32), None
    moved = resample_onto(sitk.Cast(labels, sitk.sitkFloat32), ct, default_value=0.0, linear=False)
    ones = sitk.Image(labels.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(labels)
    inside = sitk.GetArrayFromImage(resample_onto(ones, ct, default_value=0.0, linear=False)) > 0
    if not inside.any():
        raise InputError("the label map and the CT do not overlap in space; the labels must be made from this CT")
    return sitk.GetArrayFromImage(moved).astype(np.int32), inside


def _crop_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)  # type: ignore[return-value]


def _line_up_problem(hu: np.ndarray, name_roles: np.ndarray) -> str | None:
    """Why labels do not fit this CT (lungs not air, bones not dense, organs in air), or None."""
    lung = name_roles == Role.LUNG
    if lung.sum() >= _MIN_CHECK_VOXELS and (med := float(np.median(hu[lung]))) > LUNG_BELOW_HU:
        return f"voxels labelled lung have a median of {med:.0f} HU (air-filled lung is below {LUNG_BELOW_HU:.0f})"
    bone = name_roles == Role.BONE_MARROW
    if bone.sum() >= _MIN_CHECK_VOXELS and (med := float(np.median(hu[bone]))) < 100.0:
        return f"voxels labelled bone have a median of {med:.0f} HU (bone is above 100)"
    solid = (name_roles >= Role.LIVER) & ~np.isin(name_roles, [*BOWEL_ROLES, Role.GALLBLADDER])
    if solid.sum() >= _MIN_CHECK_VOXELS and (frac := float((hu[solid] < -500).mean())) > 0.2:
        return f"{100 * frac:.0f} % of the voxels labelled as solid organs are air"
    return None


def _best_slab(hu: np.ndarray, name_roles: np.ndarray) -> int | None:
    """First CT slice (array axis 0) at which a label map of fewer slices fits the CT best
    (densest bone against the emptiest lung), or None if it fits nowhere."""
    n = name_roles.shape[0]
    lung, bone = name_roles == Role.LUNG, name_roles == Role.BONE_MARROW
    best, score = None, -np.inf
    for k in range(hu.shape[0] - n + 1):
        slab = hu[k : k + n]
        if _line_up_problem(slab, name_roles) is None:
            value = (float(np.median(slab[bone])) if bone.any() else 0.0) - (float(np.median(slab[lung])) if lung.any() else 0.0)
            if value > score:
                best, score = k, value
    return best


def _name_roles(labels: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, dict[str, int], list[str], dict[str, np.ndarray]]:
    """Roles of labelled voxels by structure name (0 = no role), voxel counts, unknown names, whole heart/brain masks."""
    roles = np.zeros(labels.shape, np.uint8)
    counts: dict[str, int] = {}
    unknown: list[str] = []
    whole: dict[str, np.ndarray] = {}
    for value in (int(v) for v in np.unique(labels) if v != 0):
        name = names.get(value, f"label {value}")
        role = role_of_name(name) if value in names else None
        mask = labels == value
        if role is None:
            unknown.append(name)
            continue
        roles[mask] = role
        counts[name] = int(mask.sum())
        if name.lower() in (WHOLE_HEART, WHOLE_BRAIN):
            whole[name.lower()] = mask
    return roles, counts, sorted(unknown), whole


def _refine_by_density(roles: np.ndarray, hu: np.ndarray) -> None:
    """Labels are model output: gas and fat inside a soft-tissue label, fatty marrow and cortex in bone."""
    soft = (roles >= Role.MUSCLE) & ~np.isin(roles, [Role.LUNG, Role.AIRWAY, *range(Role.BONE_CORTEX, Role.CARTILAGE + 1)])
    roles[soft & (hu < FAT_BELOW_HU)] = Role.FAT
    roles[soft & (hu < LUNG_BELOW_HU)] = Role.GAS
    bone = roles == Role.BONE_MARROW
    roles[bone & (hu >= CORTEX_FROM_HU)] = Role.BONE_CORTEX
    roles[bone & (hu < FAT_BELOW_HU)] = Role.FAT  # fatty (yellow) marrow of long bones


def _split_heart(roles: np.ndarray, heart: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """A whole-heart label: the outer 10 mm on the patient's left (left-ventricular wall) is
    myocardium, the rest chambers (blood)."""
    depth = ndimage.distance_transform_edt(heart, sampling=spacing)
    x = np.arange(heart.shape[2])[None, None, :]
    centre = float(np.nonzero(heart)[2].mean())
    wall = heart & (depth <= _HEART_WALL_MM) & (x >= centre)
    roles[heart & (roles == Role.MYOCARDIUM)] = Role.HEART_BLOOD
    roles[wall & (roles == Role.HEART_BLOOD)] = Role.MYOCARDIUM


def _split_brain(roles: np.ndarray, hu: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """A whole-brain label: CSF below 18 HU, grey matter in a 4 mm cortical ribbon or above
    36 HU (deep nuclei, after 1.5 mm smoothing), white matter elsewhere."""
    smooth = ndimage.gaussian_filter(hu, [1.5 / s for s in spacing])
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    region = brain & (roles == Role.BRAIN_GRAY)
    roles[region] = Role.BRAIN_WHITE
    roles[region & ((depth <= _CORTEX_RIBBON_MM) | (smooth >= 36.0))] = Role.BRAIN_GRAY
    roles[region & (smooth < 18.0)] = Role.CSF


def _mark_renal_pelvis(roles: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Each kidney's collecting system: the central part of the kidney outline (its deepest
    45 %, renal sinus included), where excreted tracer collects."""
    kidney = np.isin(roles, [Role.KIDNEY, Role.RENAL_PELVIS])
    parts, n = ndimage.label(kidney)
    for label in range(1, n + 1):
        part = parts == label
        box = _crop_box(ndimage.binary_dilation(part, iterations=2) | part)
        outline = part[box].copy()
        for k in range(outline.shape[0]):
            outline[k] = ndimage.binary_fill_holes(outline[k])
        depth = ndimage.distance_transform_edt(np.pad(outline, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
        central = outline & (depth >= 0.55 * depth.max())
        view = roles[box]
        view[central & np.isin(view, [Role.KIDNEY, Role.FAT, Role.SOFT])] = Role.RENAL_PELVIS


def load_anatomy(folder: str | os.PathLike[str]) -> Anatomy:
    """Read one anatomy folder (see the module docstring) into an :class:`Anatomy`."""
    folder = Path(folder)
    ct_path = _volume_in(folder, "ct") if folder.is_dir() else None
    if ct_path is None:
        raise InputError(f"anatomy {folder} holds no ct.nii.gz (or ct/ DICOM folder); give a folder with the CT and its labels")
    ct = read_image(ct_path)
    check_ct(ct)
    label_image, names = _read_labels(folder)
    labels, inside = _labels_on_ct(label_image, ct)
    hu_stored = sitk.GetArrayFromImage(ct).astype(np.float32)
    name_roles, counts, unknown, whole = _name_roles(labels, names)
    if not counts:
        raise InputError(
            f"anatomy {folder}: no labelled structure has a known name ({', '.join(unknown[:5])}); see docs/datasets.md"
        )
    problem = _line_up_problem(
        hu_stored if inside is None else hu_stored[inside], name_roles[inside] if inside is not None else name_roles
    )
    if problem is not None:
        raise InputError(
            f"the labels of anatomy {folder} do not line up with its CT: {problem}{_slab_hint(label_image, hu_stored, names)}"
        )
    axial_ct = to_axial(ct)
    hu = _axial(hu_stored, ct, axial_ct)
    name_roles = _axial(name_roles, ct, axial_ct)
    whole = {k: _axial(v, ct, axial_ct) for k, v in whole.items()}
    spacing = tuple(float(s) for s in axial_ct.GetSpacing()[::-1])
    # Cut to the labels' field of view (another grid) and to the slices that hold labels:
    # a body region nobody labelled would pass for muscle and fat (a bladder painted as muscle).
    box = _crop_box(_axial(inside, ct, axial_ct)) if inside is not None else (slice(None),) * 3
    labelled_k = np.flatnonzero(name_roles[box].any(axis=(1, 2)))
    box = (slice((box[0].start or 0) + labelled_k[0], (box[0].start or 0) + labelled_k[-1] + 1), box[1], box[2])
    hu, name_roles = hu[box], name_roles[box]
    whole = {k: v[box] for k, v in whole.items()}
    roles = _assign_roles(hu, name_roles, whole, spacing)  # type: ignore[arg-type]
    return Anatomy(folder.name, folder, np.ascontiguousarray(hu), roles, spacing, counts, unknown)  # type: ignore[arg-type]


def _slab_hint(label_image: sitk.Image, hu: np.ndarray, names: dict[int, str]) -> str:
    """The advice for labels that do not fit: where a label map of fewer slices would fit, if anywhere."""
    advice = "; the labels must be made from this CT (TotalSegmentator writes them on its grid)"
    stored = sitk.GetArrayFromImage(label_image)
    if stored.shape[1:] != hu.shape[1:] or stored.shape[0] >= hu.shape[0]:
        return advice
    k = _best_slab(hu, _name_roles(stored.astype(np.int32), names)[0])
    if k is None:
        return advice
    return (
        f"; its {stored.shape[0]} label slices fit CT slices {k}-{k + stored.shape[0] - 1} instead: the label map was "
        "probably cut from this CT without updating its origin (fix its origin or crop the CT the same way)"
    )


def _axial(array: np.ndarray, image: sitk.Image, axial: sitk.Image) -> np.ndarray:
    """``array`` (stored order of ``image``) in the voxel order of ``axial`` = :func:`to_axial` (image)."""
    if axial is image:
        return array
    wrapped = sitk.GetImageFromArray(array.view(np.uint8) if array.dtype == bool else array)
    wrapped.CopyInformation(image)
    out = sitk.GetArrayFromImage(to_axial(wrapped))
    return out.astype(bool) if array.dtype == bool else out


def _assign_roles(
    hu: np.ndarray, name_roles: np.ndarray, whole: dict[str, np.ndarray], spacing: tuple[float, float, float]
) -> np.ndarray:
    """Role of every voxel (uint8, (z, y, x)) from the labels by name and the CT by density."""
    labelled = name_roles != 0
    body = body_mask(hu, spacing) | labelled  # the CT's body, and every labelled structure
    roles = np.where(body, role_from_hu(hu, bool((name_roles == Role.LUNG).any())), Role.OUTSIDE).astype(np.uint8)
    roles[~body & (hu > BODY_THRESHOLD_HU)] = Role.COUCH  # dense things outside the body: couch, blanket folds
    roles[labelled] = name_roles[labelled]
    if WHOLE_HEART in whole:
        _split_heart(roles, whole[WHOLE_HEART], spacing)
    if WHOLE_BRAIN in whole:
        _split_brain(roles, hu, whole[WHOLE_BRAIN], spacing)
    _refine_by_density(roles, hu)
    _mark_renal_pelvis(roles, spacing)
    return roles
