"""PET DICOM series -> SUVbw volume; CT DICOM series -> HU volume.

SUVbw = activity concentration [Bq/ml] × patient weight [g] / injected dose [Bq],
with the dose decayed to the time the image values refer to:

* ``DecayCorrection`` START: images are decay-corrected to the scan start, taken as
  ``SeriesDate/SeriesTime``, or the earliest ``AcquisitionDate/Time`` when the series
  time is later (some scanners rewrite it after post-processing);
* ADMIN: corrected to the injection time, so the dose is used as injected;
* NONE: each slice is decayed to its own ``AcquisitionTime``.

Stored values are converted per slice with ``RescaleSlope``/``RescaleIntercept``
(Bq/ml when ``Units`` is BQML; GML means the series already holds SUVbw). Any tag
that is missing is an error naming it; the user can then give the factor by hand
(``suv_factor``: SUV = Bq/ml × factor, i.e. weight in g / decayed dose in Bq).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from ..volume_io import check_ct, read_image

HOW_TO_OVERRIDE = (
    "give the SUV factor by hand (suv_factor = weight in g / decay-corrected injected dose in Bq; "
    'in a study folder: study.json {"suv_factor": ...})'
)


def _tag_error(where: str, tag: str) -> InputError:
    return InputError(f"PET DICOM in {where} lacks {tag}, needed for SUVbw; {HOW_TO_OVERRIDE}")


def _parse_datetime(date: str | None, time: str | None) -> datetime | None:
    if not date or not time:
        return None
    text = str(time).strip()
    hhmmss, _, fraction = text.partition(".")
    try:
        base = datetime.strptime(str(date).strip()[:8] + hhmmss.ljust(6, "0")[:6], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    return base + timedelta(microseconds=micro)


def _parse_dt(value: str | None) -> datetime | None:
    """A DICOM DT value (YYYYMMDDHHMMSS.FFFFFF, timezone suffix ignored)."""
    if not value:
        return None
    text = str(value).strip().split("+")[0].split("-")[0]
    return _parse_datetime(text[:8], text[8:])


def read_pet_datasets(folder: str | os.PathLike[str]) -> list[Dataset]:
    """All PET slices of the single series in ``folder``, sorted along the slice normal."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the folder holding the PET DICOM series")
    slices: list[Dataset] = []
    unreadable = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            unreadable += 1
            continue
        if "PixelData" in ds:
            slices.append(ds)
    if not slices:
        extra = f" ({unreadable} files are not DICOM)" if unreadable else ""
        raise InputError(f"{folder} holds no DICOM images{extra}; give the folder of the PET series")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; put the PET series alone in its folder")
    for ds in slices:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if tag not in ds:
                raise InputError(
                    f"PET DICOM file {Path(ds.filename).name} in {folder} lacks {tag}; the volume geometry cannot be built"
                )
    normal = _normal(slices[0])
    slices.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    return slices


def _normal(ds: Dataset) -> np.ndarray:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return np.cross(iop[:3], iop[3:])


def suv_factors(slices: list[Dataset], where: str = "the series") -> np.ndarray:
    """Per-slice factor turning Bq/ml into SUVbw (float64, one per slice, in ``slices`` order)."""
    first = slices[0]
    units = str(first.get("Units", "")).strip().upper()
    if not units:
        raise _tag_error(where, "Units (0054,1001)")
    if units == "GML":
        return np.ones(len(slices))
    if units != "BQML":
        raise InputError(f"PET DICOM in {where} has Units {units}, not BQML (Bq/ml); {HOW_TO_OVERRIDE}")
    weight = first.get("PatientWeight")
    if weight in (None, "") or float(weight) <= 0:
        raise _tag_error(where, "PatientWeight (0010,1030)")
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise _tag_error(where, "RadiopharmaceuticalInformationSequence (0054,0016)")
    info = sequence[0]
    dose = info.get("RadionuclideTotalDose")
    if dose in (None, "") or float(dose) <= 0:
        raise _tag_error(where, "RadionuclideTotalDose (0018,1074)")
    half_life = info.get("RadionuclideHalfLife")
    if half_life in (None, "") or float(half_life) <= 0:
        raise _tag_error(where, "RadionuclideHalfLife (0018,1075)")
    decay = str(first.get("DecayCorrection", "")).strip().upper()
    if not decay:
        raise _tag_error(where, "DecayCorrection (0054,1102)")
    if decay == "ADMIN":
        return np.full(len(slices), float(weight) * 1000.0 / float(dose))
    injection = _injection_time(first, info, where)
    if decay == "START":
        start = _scan_start(slices, where)
        elapsed = np.full(len(slices), (start - injection).total_seconds())
    elif decay == "NONE":
        times = [_parse_datetime(ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime")) for ds in slices]
        if any(t is None for t in times):
            raise _tag_error(where, "AcquisitionDate/AcquisitionTime (0008,0022/0032) on every slice")
        elapsed = np.array([(t - injection).total_seconds() for t in times])  # type: ignore[operator]
    else:
        raise InputError(f"PET DICOM in {where} has DecayCorrection {decay} (expected START, ADMIN or NONE); {HOW_TO_OVERRIDE}")
    if np.any(elapsed < 0):
        elapsed = np.where(elapsed < 0, elapsed + 86400.0, elapsed)  # injection before midnight, scan after
    if np.any(elapsed > 86400.0):
        raise InputError(
            f"PET DICOM in {where}: the scan is more than a day after the injection; check the times or {HOW_TO_OVERRIDE}"
        )
    decayed = float(dose) * np.exp(-math.log(2.0) * elapsed / float(half_life))
    return float(weight) * 1000.0 / decayed


def _injection_time(first: Dataset, info: Dataset, where: str) -> datetime:
    when = _parse_dt(info.get("RadiopharmaceuticalStartDateTime"))
    if when is None:
        when = _parse_datetime(first.get("SeriesDate") or first.get("StudyDate"), info.get("RadiopharmaceuticalStartTime"))
    if when is None:
        raise _tag_error(where, "RadiopharmaceuticalStartTime (0018,1072) or RadiopharmaceuticalStartDateTime (0018,1078)")
    return when


def _scan_start(slices: list[Dataset], where: str) -> datetime:
    first = slices[0]
    series = _parse_datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [
        t
        for t in (_parse_datetime(ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime")) for ds in slices)
        if t
    ]
    earliest = min(acquisitions) if acquisitions else None
    if series is None and earliest is None:
        raise _tag_error(where, "SeriesDate/SeriesTime (0008,0021/0031)")
    if series is None or (earliest is not None and series > earliest):
        return earliest  # type: ignore[return-value]
    return series


def read_pet_suv(folder: str | os.PathLike[str], suv_factor: float | None = None) -> sitk.Image:
    """Read a PET DICOM series as an SUVbw float32 image (LPS geometry from the headers).

    ``suv_factor`` (SUV per Bq/ml) replaces the header computation when given.
    """
    slices = read_pet_datasets(folder)
    where = str(folder)
    if suv_factor is not None:
        if not suv_factor > 0:
            raise InputError(f"suv_factor {suv_factor} must be a positive number (weight in g / decayed dose in Bq)")
        factors = np.full(len(slices), float(suv_factor))
    else:
        factors = suv_factors(slices, where)
    planes = []
    for ds, factor in zip(slices, factors):
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored = ds.pixel_array.astype(np.float64)
        planes.append(((stored * slope + intercept) * factor).astype(np.float32))
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise InputError(f"PET DICOM slices in {where} have different sizes {sorted(shapes)}; the series is not one volume")
    return _volume(np.stack(planes), slices, where)


def _volume(array: np.ndarray, slices: list[Dataset], where: str) -> sitk.Image:
    first = slices[0]
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    if len(slices) > 1:
        steps = np.diff(positions @ normal)
        if np.any(steps <= 1e-4):
            raise InputError(f"PET DICOM in {where} has two slices at the same position; remove the duplicates")
        if np.ptp(steps) > 0.01 * float(np.mean(steps)) + 1e-3:
            raise InputError(
                f"PET DICOM in {where} has uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm); resample it first"
            )
        dz = float(np.mean(steps))
    else:
        dz = float(first.get("SliceThickness", 1.0) or 1.0)
    spacing_rc = [float(v) for v in first.PixelSpacing]  # row spacing (between rows, y), column spacing (x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing_rc[1], spacing_rc[0], dz))
    image.SetOrigin(tuple(float(v) for v in positions[0]))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    return image


def read_ct_hu(path: str | os.PathLike[str]) -> sitk.Image:
    """Read a CT (DICOM series folder or file) as float32 HU; SimpleITK applies the
    per-file RescaleSlope/RescaleIntercept. Refuses values that are not plausible HU."""
    image = sitk.Cast(read_image(path), sitk.sitkFloat32)
    check_ct(image)
    return image
