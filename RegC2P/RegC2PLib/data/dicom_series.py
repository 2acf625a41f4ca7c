"""DICOM series in a folder tree: discovery, choice of the CT or PET series, geometry checks.

A PACS export or a CD holds many series in one folder or a tree of folders: the CT, the
PET with and without attenuation correction, scouts, dose reports. This module

* finds every image series under a folder (:func:`find_series`): SimpleITK's GDCM
  tools find the folders that hold DICOM series (``ImageSeriesReader.GetGDCMSeriesIDs``,
  which looks at one folder only, so every sub-folder is visited), pydicom reads the
  header of each file there (pixels are not read; files that are not DICOM Part 10 are
  skipped) and files are grouped by ``SeriesInstanceUID``, even when one series is
  spread over several folders;
* picks the series a role needs (:func:`choose_series`): for ``CT`` a CT image series
  of at least two slices that is not a scout (``ImageType`` LOCALIZER); for ``PT`` the
  same for PET, and attenuation-corrected (``CorrectedImage`` contains ATTN) — a PET
  without attenuation correction is never used for SUV. Among several, ORIGINAL is
  preferred to DERIVED (reformats, MIPs, synthetic series), PRIMARY to SECONDARY, and
  an evenly spaced stack to a broken one; when several remain, the error lists them
  (UID, description, series number, slice count) and says how to choose. An explicit
  choice is a ``SeriesInstanceUID`` or a ``SeriesNumber``;
* checks that the slices form one evenly spaced, untilted stack
  (:meth:`DicomSeries.geometry`): a missing slice, uneven spacing, duplicated
  positions, slices of different size or orientation, and gantry tilt are each refused
  with a one-line error naming the problem. A tilted acquisition is refused rather than
  resampled: its slices are sheared, which a volume grid (origin, spacing, orthogonal
  directions) cannot hold, and silently resampling it would move anatomy;
* reads the chosen series (:func:`read_series_image`, :func:`read_ct_series`) with the
  geometry built from the headers: origin at the first slice, third axis along the
  slice normal, slices in order of position.

Positions and spacings are in mm in the DICOM patient system (LPS); arrays are (z, y, x).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from ..errors import InputError

ROLE_NAMES = {"CT": "CT", "PT": "PET"}
# Relative and absolute tolerance (mm) on slice steps and in-plane drift: positions are
# written as decimal strings, often rounded to 0.01 mm or coarser.
STEP_TOLERANCE = (0.01, 0.02)
MAX_LISTED = 8  # series named in an error message before "and N more"


@dataclass(frozen=True)
class SliceGeometry:
    """The volume grid of an evenly spaced stack of slices (LPS, mm).

    ``size`` is (columns, rows, slices); ``spacing`` (column step, row step, slice
    step); ``direction`` row-major with columns = row direction, column direction and
    slice normal; ``origin`` the first slice's ``ImagePositionPatient``.
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` (of this size) this geometry; returns it."""
        if tuple(image.GetSize()) != self.size:
            raise InputError(f"the DICOM reader gave {image.GetSize()} voxels where the headers say {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True)
class DicomSeries:
    """One image series: series-level tags and every slice's header (pixels not read),
    sorted along the slice normal (by ``InstanceNumber`` when positions are missing)."""

    uid: str
    number: str
    description: str
    modality: str
    image_type: tuple[str, ...]
    corrected: tuple[str, ...] | None  # CorrectedImage (0028,0051); None when absent
    headers: tuple[Dataset, ...]

    @property
    def files(self) -> list[Path]:
        return [Path(ds.filename) for ds in self.headers]

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_original(self) -> bool:
        return not self.image_type or self.image_type[0] == "ORIGINAL"

    @property
    def attenuation_corrected(self) -> bool:
        return self.corrected is not None and "ATTN" in self.corrected

    @property
    def name(self) -> str:
        """``PET series UID 'description'`` for messages."""
        return f"{ROLE_NAMES.get(self.modality, self.modality)} series {self.uid}{self._described}"

    @property
    def _described(self) -> str:
        return f" '{self.description}'" if self.description else ""

    def label(self) -> str:
        """``UID 'description' (series N, MODALITY, K slices)`` for listings."""
        number = f"series {self.number}, " if self.number else ""
        frames = int(self.headers[0].get("NumberOfFrames", 1) or 1)
        count = f"{len(self.headers)} slices" if frames == 1 else f"{len(self.headers)} multi-frame object of {frames} frames"
        return f"{self.uid}{self._described} ({number}{self.modality}, {count})"

    def geometry(self) -> SliceGeometry:
        """The volume grid of the slices; :class:`InputError` naming the problem when
        they are not one evenly spaced, untilted stack of equal slices."""
        return _stack_geometry(self)


@dataclass(frozen=True)
class DicomVolume:
    """A series read as a volume: the image (geometry from :meth:`DicomSeries.geometry`,
    voxel ``k`` along the third axis is ``series.headers[k]``) and the series it came from."""

    image: sitk.Image
    series: DicomSeries


# --------------------------------------------------------------------------- discovery


def find_series(root: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every image series in ``root`` and its sub-folders (hidden folders skipped), by
    modality, series number and UID. Files that are not DICOM, and DICOM objects
    without pixels (reports, structured documents), are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the folder holding the DICOM files")
    files: list[str] = []
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on stderr for each folder without DICOM
    try:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            # One GDCM scan says whether the folder holds a series; asking GDCM for each series' file
            # names would scan the folder again per series, so pydicom groups the files instead.
            if names and sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
                files.extend(os.path.join(folder, name) for name in sorted(names))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    return series_from_files(files)


def series_from_files(paths: Iterable[str | os.PathLike[str]]) -> list[DicomSeries]:
    """Group DICOM image files into series by ``SeriesInstanceUID`` (headers only)."""
    groups: dict[str, list[Dataset]] = {}
    for path in dict.fromkeys(str(p) for p in paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "Rows" not in ds or "Columns" not in ds:
            continue  # not an image (structured report, presentation state, ...)
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")).strip(), []).append(ds)
    found = [_series(uid, headers) for uid, headers in groups.items()]
    return sorted(found, key=lambda s: (s.modality, _number_key(s.number), s.uid))


def _number_key(number: str) -> tuple[int, str]:
    return (int(number), "") if number.lstrip("-").isdigit() else (1 << 30, number)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _values(ds: Dataset, keyword: str) -> tuple[str, ...] | None:
    if keyword not in ds:
        return None
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return tuple(str(v).strip().upper() for v in items)


def _series(uid: str, headers: list[Dataset]) -> DicomSeries:
    first = headers[0]
    return DicomSeries(
        uid=uid,
        number=_text(first, "SeriesNumber"),
        description=_text(first, "SeriesDescription"),
        modality=_text(first, "Modality").upper(),
        image_type=_values(first, "ImageType") or (),
        corrected=_values(first, "CorrectedImage"),
        headers=tuple(_sorted_slices(headers)),
    )


def _normal(ds: Dataset) -> np.ndarray | None:
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    except (AttributeError, TypeError, ValueError):
        return None
    return np.cross(iop[:3], iop[3:]) if iop.size == 6 else None


def _position(ds: Dataset) -> np.ndarray | None:
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=float)
    except (AttributeError, TypeError, ValueError):
        return None
    return position if position.size == 3 else None


def _sorted_slices(headers: list[Dataset]) -> list[Dataset]:
    """Along the slice normal (by InstanceNumber, then file name, where positions are equal or missing)."""
    normal = _normal(headers[0])
    positions = [_position(ds) for ds in headers]
    known = normal is not None and all(p is not None for p in positions)
    along = [float(p @ normal) if known else 0.0 for p in positions]  # type: ignore[operator]
    order = sorted(
        range(len(headers)), key=lambda i: (along[i], int(headers[i].get("InstanceNumber", 0) or 0), str(headers[i].filename))
    )
    return [headers[i] for i in order]


# --------------------------------------------------------------------------- choice


def _listing(series: Sequence[DicomSeries]) -> str:
    shown = "; ".join(s.label() for s in series[:MAX_LISTED])
    return shown + (f"; and {len(series) - MAX_LISTED} more" if len(series) > MAX_LISTED else "")


def choose_series(found: Sequence[DicomSeries], role: str, choice: str | None, where: str, how_to_choose: str) -> DicomSeries:
    """The ``role`` (``"CT"`` or ``"PT"``) series among ``found``.

    ``choice`` (a ``SeriesInstanceUID`` or ``SeriesNumber``) picks one explicitly;
    otherwise exactly one series must qualify (see the module docstring). ``where``
    names the folder in messages; ``how_to_choose`` ends the message when several
    qualify (e.g. ``"choose one with --series UID or --series NUMBER"``).
    """
    name = ROLE_NAMES[role]
    if not found:
        raise InputError(f"{where} holds no DICOM image series; give the folder of the {name} series")
    if choice is not None:
        chosen = _chosen(found, role, str(choice).strip(), where)
    else:
        chosen = _qualifying(found, role, where, how_to_choose)
    if role == "PT" and not chosen.attenuation_corrected:
        what = "has no CorrectedImage (0028,0051)" if chosen.corrected is None else "lacks ATTN in CorrectedImage (0028,0051)"
        raise InputError(
            f"PET series {chosen.label()} in {where} {what}: it is not attenuation-corrected, and SUV needs an "
            "attenuation-corrected PET; choose the attenuation-corrected series"
        )
    return chosen


def _chosen(found: Sequence[DicomSeries], role: str, choice: str, where: str) -> DicomSeries:
    matches = [s for s in found if choice in (s.uid, s.number)]
    for keep in (lambda s: s.modality == role, lambda s: not s.is_localizer and len(s.headers) >= 2):
        if len(matches) > 1:  # a number shared by the CT and the PET, or by a series and its scout
            matches = [s for s in matches if keep(s)] or matches
    if not matches:
        raise InputError(f"{where} holds no series with UID or number {choice}; it holds: {_listing(found)}")
    if len(matches) > 1:
        raise InputError(f"several series in {where} have the number {choice}: {_listing(matches)}; choose one by its UID")
    chosen = matches[0]
    if chosen.modality != role:
        raise InputError(f"series {chosen.label()} in {where} is {chosen.modality}, not {ROLE_NAMES[role]}; choose a {role} one")
    return chosen


def _qualifying(found: Sequence[DicomSeries], role: str, where: str, how_to_choose: str) -> DicomSeries:
    name = ROLE_NAMES[role]
    of_role = [s for s in found if s.modality == role]
    stacks = [s for s in of_role if not s.is_localizer and len(s.headers) >= 2]
    candidates = [s for s in stacks if s.attenuation_corrected] if role == "PT" else stacks
    # Narrow step by step, each step only when it leaves a candidate: acquired before
    # derived (reformats, MIPs), primary before secondary, then a readable stack.
    for keep in (lambda s: s.is_original, lambda s: len(s.image_type) < 2 or s.image_type[1] == "PRIMARY", _stacks_evenly):
        if len(candidates) > 1:
            candidates = [s for s in candidates if keep(s)] or candidates
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise InputError(f"{where} holds {len(candidates)} {name} image series: {_listing(candidates)}; {how_to_choose}")
    if role == "PT" and stacks:
        raise InputError(
            f"{where} holds PET only without attenuation correction (CorrectedImage (0028,0051) lacks ATTN): "
            f"{_listing(stacks)}; SUV needs the attenuation-corrected PET series, add it to the folder"
        )
    if of_role:
        raise InputError(
            f"{where} holds no {name} image series, only scouts, single slices or multi-frame objects ({_listing(of_role)}); "
            f"add the {name} series (convert a multi-frame one to a volume file first)"
        )
    raise InputError(f"{where} holds no {name} series (it holds: {_listing(found)}); add the {name} series")


def _stacks_evenly(series: DicomSeries) -> bool:
    try:
        series.geometry()
    except InputError:
        return False
    return True


# --------------------------------------------------------------------------- geometry


def _stack_geometry(series: DicomSeries) -> SliceGeometry:
    what = series.name
    headers = series.headers
    first = headers[0]
    frames = int(first.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(
            f"{what} is a multi-frame (enhanced) DICOM object of {frames} frames; convert it to a volume file "
            "(.nii.gz, .nrrd) first, e.g. with 3D Slicer"
        )
    if len(headers) < 2:
        raise InputError(f"{what} holds a single slice; a 3D volume needs a series of slices")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = [ds for ds in headers if tag not in ds]
        if missing:
            raise InputError(f"{what}: file {Path(missing[0].filename).name} lacks {tag}; the volume geometry cannot be built")
    for keyword in ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient"):
        values = [np.array([float(v) for v in np.atleast_1d(ds.get(keyword))]) for ds in headers]
        same = [v.shape == values[0].shape and np.allclose(v, values[0], atol=1e-4) for v in values]
        odd = None if all(same) else same.index(False)
        if odd is not None:
            raise InputError(
                f"{what}: file {Path(headers[odd].filename).name} has another {keyword} than "
                f"{Path(first.filename).name}; the series is not one volume"
            )
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row, column = iop[:3], iop[3:]
    normal = np.cross(row, column)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    along = positions @ normal
    steps = np.diff(along)
    _check_steps(what, headers, along, steps)
    step = float(np.median(steps))
    _check_tilt(what, positions, along, normal, step)
    spacing_rc = [float(v) for v in first.PixelSpacing]  # between rows (y), between columns (x)
    return SliceGeometry(
        size=(int(first.Columns), int(first.Rows), len(headers)),
        spacing=(spacing_rc[1], spacing_rc[0], float((along[-1] - along[0]) / (len(headers) - 1))),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()),
    )


def _check_steps(what: str, headers: Sequence[Dataset], along: np.ndarray, steps: np.ndarray) -> None:
    def name(i: int) -> str:
        return Path(headers[i].filename).name

    same = np.flatnonzero(steps <= 1e-3)
    if same.size:
        i = int(same[0])
        raise InputError(
            f"{what}: {same.size + 1} slices share positions (first {name(i)} and {name(i + 1)} at {along[i]:.2f} mm), "
            "as with several time points, phases or a duplicated export; keep one slice per position"
        )
    step = float(np.median(steps))
    relative, absolute = STEP_TOLERANCE
    off = np.flatnonzero(np.abs(steps - step) > relative * step + absolute)
    if not off.size:
        return
    i = int(off[0])
    missing = round(steps[i] / step) - 1
    if missing >= 1 and abs(steps[i] - (missing + 1) * step) <= relative * step + absolute:
        gap = f"{missing} slice{'s are' if missing > 1 else ' is'} missing"
    else:
        gap = f"uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm)"
    raise InputError(
        f"{what}: {gap} — {steps[i]:.2f} mm between {name(i)} and {name(i + 1)} (at {along[i]:.2f} and "
        f"{along[i + 1]:.2f} mm along the slice normal) where the slices are {step:.2f} mm apart; "
        "export the complete series (reading it as a volume would misplace slices)"
    )


def _check_tilt(what: str, positions: np.ndarray, along: np.ndarray, normal: np.ndarray, step: float) -> None:
    """Refuse slices whose positions drift within the slice plane (gantry tilt or a shear)."""
    drift = positions - positions[0] - np.outer(along - along[0], normal)
    size = float(np.max(np.linalg.norm(drift, axis=1)))
    relative, absolute = STEP_TOLERANCE
    if size <= relative * step + absolute:
        return
    angle = float(np.degrees(np.arctan2(np.linalg.norm(drift[-1]), along[-1] - along[0])))
    raise InputError(
        f"{what} is tilted: its slices shift {size:.1f} mm sideways over the stack (gantry tilt of about {angle:.1f}°), so they "
        "do not form a rectangular volume; it is refused rather than resampled — resample it to an untilted grid "
        "first (3D Slicer does this on DICOM import with 'Acquisition geometry regularization' set to harden) "
        "and give the result as a volume file"
    )


# --------------------------------------------------------------------------- reading


def read_series_image(series: DicomSeries) -> sitk.Image:
    """The series as one volume (SimpleITK's GDCM reader, rescale slope/intercept
    applied), with the geometry from :meth:`DicomSeries.geometry`."""
    geometry = series.geometry()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {series.label()}: {reader_error(exc)}") from exc
    return geometry.apply(image)


def reader_error(exc: RuntimeError) -> str:
    """The useful (last) line of a SimpleITK reader exception."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else "unknown reason"


def read_ct_series(
    folder: str | os.PathLike[str],
    choice: str | None = None,
    how_to_choose: str = "choose one by its SeriesInstanceUID or SeriesNumber",
) -> DicomVolume:
    """The CT series of a folder tree (see :func:`choose_series`) read as a volume."""
    folder = Path(folder)
    series = choose_series(find_series(folder), "CT", choice, str(folder), how_to_choose)
    return DicomVolume(read_series_image(series), series)
