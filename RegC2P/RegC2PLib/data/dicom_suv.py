"""PET DICOM series -> SUVbw volume, for the units GE, Siemens and Philips scanners write.

SUVbw = activity concentration [Bq/ml] × patient weight [g] / injected dose [Bq], with
the dose decayed to the time the image values refer to. Each slice's stored values are
first rescaled with its own ``RescaleSlope``/``RescaleIntercept``; then, by ``Units``:

* **BQML** (GE, Siemens, Philips): Bq/ml, converted with the header's weight, dose,
  half-life and times;
* **CNTS** (Philips): counts; Bq/ml = counts × Philips' private Activity Concentration
  Scale Factor (7053,1009), then as BQML. Philips also stores its own SUVbw factor per
  count, the SUV Scale Factor (7053,1000): the computed factor must agree with it within
  :data:`PHILIPS_AGREEMENT` (else an error says which tags disagree), and it is used
  alone when (7053,1009) or the standard dose/time tags are missing;
* **GML**: already SUVbw (g/ml), used as stored.

The decay reference (``DecayCorrection``): START — images are decay-corrected to the
scan start, ``SeriesDate/SeriesTime``; when the series time is later than the first
``AcquisitionTime`` (scanners rewrite it after reconstruction), GE's private scan
DateTime ("GEMS_PETD_01" (0009,xx0D), as QIBA's vendor-neutral SUV pseudo-code does) or
Siemens' private Decay Correction DateTime ("SIEMENS MED PT" (0071,xx22)) when present,
else the earliest ``AcquisitionDate/Time``. ADMIN — corrected to the injection, so the
dose is used as injected. NONE — each slice decays to its own ``AcquisitionTime``.

The injection time is ``RadiopharmaceuticalStartDateTime``, else
``RadiopharmaceuticalStartTime`` on the series date, else GE's private administration
DateTime ("GEMS_PETD_01" (0009,xx3B)). Private tags are found through their private
creator, never by a fixed element number, and are used only for these date-times: dose
and half-life come from the standard tags alone (GE's private activity tags change units
between software versions). Anything missing is a one-line error naming the tag and the
manual override (``suv_factor``: SUV per rescaled pixel value, i.e. weight in g /
decayed dose in Bq for Bq/ml).
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from ..errors import InputError
from .dicom_series import DicomSeries, choose_series, find_series, reader_error

HOW_TO_OVERRIDE = (
    "give the SUV factor by hand (suv_factor = SUV per rescaled pixel value: weight in g / decay-corrected injected dose "
    'in Bq for Bq/ml; in a study folder: study.json {"suv_factor": ...})'
)
PHILIPS = "Philips PET Private Group"
GE = "GEMS_PETD_01"
SIEMENS = "SIEMENS MED PT"
# Philips writes its SUV Scale Factor with three significant digits (0.000434): 0.12 %
# rounding. A larger difference means the weight, dose or times disagree.
PHILIPS_AGREEMENT = 0.02


def _tag_error(where: str, tag: str) -> InputError:
    return InputError(f"PET DICOM {where} lacks {tag}, needed for SUVbw; {HOW_TO_OVERRIDE}")


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


def _private(ds: Dataset, group: int, creator: str, offset: int) -> str | None:
    """A private element's value as text, found through its private creator; None when absent."""
    try:
        tag = ds.private_block(group, creator).get_tag(offset)
    except KeyError:
        return None
    if tag not in ds:
        return None
    value = ds[tag].value
    if isinstance(value, bytes):  # stored as UN (explicit VR files written without the private dictionary)
        value = value.decode("latin-1", "replace").strip("\x00 ")
    text = str(value).strip()
    return text or None


def _private_number(ds: Dataset, group: int, creator: str, offset: int) -> float | None:
    text = _private(ds, group, creator, offset)
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def suv_factors(slices: list[Dataset] | tuple[Dataset, ...], where: str = "in the series") -> np.ndarray:
    """Per-slice factor turning rescaled pixel values into SUVbw (float64, ``slices`` order)."""
    units = str(slices[0].get("Units", "")).strip().upper()
    if not units:
        raise _tag_error(where, "Units (0054,1001)")
    if units == "GML":
        return np.ones(len(slices))
    if units == "BQML":
        return _bqml_factors(slices, where)
    if units == "CNTS":
        return _philips_count_factors(slices, where)
    raise InputError(f"PET DICOM {where} has Units {units}, not BQML (Bq/ml), CNTS (Philips counts) or GML; {HOW_TO_OVERRIDE}")


def _philips_count_factors(slices, where: str) -> np.ndarray:
    concentration = [_private_number(ds, 0x7053, PHILIPS, 0x09) for ds in slices]
    philips_suv = [_private_number(ds, 0x7053, PHILIPS, 0x00) for ds in slices]
    have_concentration = all(v is not None for v in concentration)
    have_suv = all(v is not None for v in philips_suv)
    if not have_concentration and not have_suv:
        raise _tag_error(where + " (Units CNTS, Philips counts)", "Philips' Activity Concentration Scale Factor (7053,1009)")
    if not have_concentration:
        return np.array(philips_suv, dtype=float)
    try:
        computed = np.array(concentration, dtype=float) * _bqml_factors(slices, where)
    except InputError:
        if have_suv:
            return np.array(philips_suv, dtype=float)  # Philips' own SUVbw factor, standard tags incomplete
        raise
    if have_suv:
        reference = np.array(philips_suv, dtype=float)
        difference = computed / reference - 1.0
        worst = int(np.argmax(np.abs(difference)))
        if abs(difference[worst]) > PHILIPS_AGREEMENT:
            raise InputError(
                f"PET DICOM {where}: Philips' SUV Scale Factor (7053,1000) {reference[worst]:.6g} per count disagrees with "
                f"{computed[worst]:.6g} from (7053,1009), weight, dose and times ({100 * difference[worst]:+.1f} %); "
                f"check those tags or {HOW_TO_OVERRIDE}"
            )
    return computed


def _bqml_factors(slices, where: str) -> np.ndarray:
    """SUVbw per Bq/ml for each slice."""
    first = slices[0]
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
        times = [_acquisition_time(ds) for ds in slices]
        if any(t is None for t in times):
            raise _tag_error(where, "AcquisitionDate/AcquisitionTime (0008,0022/0032) on every slice")
        elapsed = np.array([(t - injection).total_seconds() for t in times])  # type: ignore[operator]
    else:
        raise InputError(f"PET DICOM {where} has DecayCorrection {decay} (expected START, ADMIN or NONE); {HOW_TO_OVERRIDE}")
    if np.any(elapsed < 0):
        elapsed = np.where(elapsed < 0, elapsed + 86400.0, elapsed)  # injection before midnight, scan after
    if np.any(elapsed > 86400.0):
        raise InputError(f"PET DICOM {where}: the scan is over a day after the injection; check the times or {HOW_TO_OVERRIDE}")
    decayed = float(dose) * np.exp(-math.log(2.0) * elapsed / float(half_life))
    return float(weight) * 1000.0 / decayed


def _acquisition_time(ds: Dataset) -> datetime | None:
    return _parse_datetime(ds.get("AcquisitionDate") or ds.get("SeriesDate"), ds.get("AcquisitionTime"))


def _injection_time(first: Dataset, info: Dataset, where: str) -> datetime:
    when = _parse_dt(info.get("RadiopharmaceuticalStartDateTime"))
    if when is None:
        when = _parse_datetime(first.get("SeriesDate") or first.get("StudyDate"), info.get("RadiopharmaceuticalStartTime"))
    if when is None:
        when = _parse_dt(_private(first, 0x0009, GE, 0x3B))
    if when is None:
        raise _tag_error(where, "RadiopharmaceuticalStartTime (0018,1072) or RadiopharmaceuticalStartDateTime (0018,1078)")
    return when


def _scan_start(slices, where: str) -> datetime:
    first = slices[0]
    series = _parse_datetime(first.get("SeriesDate"), first.get("SeriesTime"))
    acquisitions = [t for t in (_acquisition_time(ds) for ds in slices) if t is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series is not None and (earliest is None or series <= earliest):
        return series
    vendor = _parse_dt(_private(first, 0x0009, GE, 0x0D)) or _parse_dt(_private(first, 0x0071, SIEMENS, 0x22))
    if vendor is not None:
        return vendor
    if earliest is None:
        raise _tag_error(where, "SeriesDate/SeriesTime (0008,0021/0031) and AcquisitionTime (0008,0032)")
    return earliest


def read_pet_suv(
    folder: str | os.PathLike[str],
    suv_factor: float | None = None,
    series: str | None = None,
    how_to_choose: str = "choose one by its SeriesInstanceUID or SeriesNumber",
) -> sitk.Image:
    """The attenuation-corrected PET series of a folder tree as an SUVbw float32 image.

    ``series`` (UID or number) picks the series when several qualify; ``how_to_choose``
    ends the error that lists them. ``suv_factor`` (SUV per rescaled pixel value)
    replaces the header computation when given. Geometry comes from the headers
    (:meth:`DicomSeries.geometry`: a missing slice, uneven spacing or tilt is refused).
    """
    folder = Path(folder)
    chosen = choose_series(find_series(folder), "PT", series, str(folder), how_to_choose)
    return pet_series_suv(chosen, suv_factor)


def pet_series_suv(series: DicomSeries, suv_factor: float | None = None) -> sitk.Image:
    """One PET series as an SUVbw float32 image (see :func:`read_pet_suv`)."""
    geometry = series.geometry()
    where = "in " + series.name.split(" ", 1)[1]  # "in series UID 'description'"
    if suv_factor is not None:
        if not (math.isfinite(suv_factor) and suv_factor > 0):
            raise InputError(f"suv_factor {suv_factor} must be a positive number (SUV per rescaled pixel value)")
        factors = np.full(len(series.headers), float(suv_factor))
    else:
        factors = suv_factors(series.headers, where)
    columns, rows, count = geometry.size
    volume = np.empty((count, rows, columns), np.float32)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetOutputPixelType(sitk.sitkFloat64)
    for k, (path, factor) in enumerate(zip(series.files, factors)):
        # GDCM applies this file's own RescaleSlope/Intercept and reads any transfer syntax it supports.
        reader.SetFileName(str(path))
        try:
            plane = sitk.GetArrayFromImage(reader.Execute())
        except RuntimeError as exc:
            raise InputError(f"cannot read PET DICOM file {path}: {reader_error(exc)}") from exc
        if plane.shape != (1, rows, columns):
            raise InputError(f"PET DICOM file {path.name} holds {plane.shape} voxels, not one {rows}x{columns} slice")
        volume[k] = plane[0] * factor
    return geometry.apply(sitk.GetImageFromArray(volume))
