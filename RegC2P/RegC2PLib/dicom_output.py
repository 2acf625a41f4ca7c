"""The synthetic PET written as a DICOM PET Image series in the CT's study.

A PACS or a clinical viewer takes DICOM, not NIfTI. :func:`write_pet_series` writes one
PET Image Storage file per CT slice, in the CT's study and frame of reference:

* the same ``StudyInstanceUID`` and ``FrameOfReferenceUID`` as the CT, a new
  ``SeriesInstanceUID``; each file has its CT slice's ``ImagePositionPatient``,
  ``ImageOrientationPatient``, ``PixelSpacing`` and ``SliceThickness`` (copied as
  written) and references that slice in ``SourceImageSequence``;
* values: ``Units`` GML (SUVbw, used as stored by viewers), unsigned 16-bit with
  ``RescaleIntercept`` 0 (PET requires it) and one ``RescaleSlope`` for the whole series,
  0.001 SUV per step, which keeps every SUV from 0 to 65.5 to 0.001 SUV; a PET whose
  maximum is higher gets the smallest slope that holds it (:func:`slope_for`). One slope
  for all slices, because some readers assume it (per-slice slopes are legal);
* ``ImageType`` DERIVED\\PRIMARY (the PET Image IOD allows no other second value), and a
  ``SeriesDescription``, ``DerivationDescription`` and ``ImageComments`` saying it is
  synthetic, with the model's name and SHA-256. (The newer ``SyntheticData`` attribute
  is left out: validators of the 2022 standard reject it as unknown.);
* patient, study and frame-of-reference tags are copied from the CT; the rest is what
  the PET Image IOD requires, stated for what it is (series date/time = when written,
  ``Manufacturer`` RegC2P, empty acquisition date/time, no radiopharmaceutical, no
  corrections, ``DecayCorrection`` NONE). Nothing about the patient is invented;
* atomic: the files are written into a temporary folder beside the target
  (:func:`~RegC2PLib.atomic.temporary_folder`, removed by the next write if a kill left
  it), read back (pydicom: one series, every file's values and slope; GDCM: one series
  ID), then the folder is renamed into place. On any error nothing is left behind; a
  write error (a full disk) is a one-line :class:`~RegC2PLib.errors.OutputError`.

The PET must lie on the CT series' grid (the grid :func:`read_ct_series` gives); a
grid with the same voxel centres in another axis order is accepted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from . import __version__
from .atomic import check_output_place, temporary_folder, write_errors
from .data.dicom_series import DicomSeries, SliceGeometry, series_from_files
from .errors import InputError, RegC2PError
from .volume_io import array_view

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
DICOM_SUFFIX = ".dcm"  # an output folder named *.dcm receives a DICOM series
SUV_STEP = 0.001  # SUV per stored unit (RescaleSlope) up to MAX_STORED * SUV_STEP = 65.535 SUV
MAX_STORED = 65535
DISPLAY_WINDOW = (0.0, 10.0)  # SUV window suggested to viewers (WindowCenter/Width)

# Patient, General Study, Patient Study and Frame of Reference attributes copied from the CT.
COPIED_FROM_CT = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "BodyPartExamined",
    "Laterality",
)
# Type 2 attributes (present, possibly empty) among them: written empty when the CT lacks them.
REQUIRED_EMPTY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime")
REQUIRED_EMPTY += ("ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator", "Laterality")
# Per-slice geometry copied from the CT slice as written.
SLICE_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation")


@dataclass(frozen=True)
class SyntheticSource:
    """Where a synthetic PET came from: the model file's name and SHA-256."""

    model_name: str
    model_sha256: str


def is_dicom_output(path: str | os.PathLike[str], output_format: str = "auto") -> bool:
    """Whether ``path`` receives a DICOM series: ``output_format`` ``dicom``, or ``auto``
    and a name ending in ``.dcm`` (a folder)."""
    return output_format == "dicom" or (output_format == "auto" and Path(path).name.lower().endswith(DICOM_SUFFIX))


def check_series_folder(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a DICOM output folder that cannot be created
    (:func:`~RegC2PLib.atomic.check_output_place`) or that already holds files."""
    path = check_output_place(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise InputError(f"{path} already exists; a DICOM series is written into a new (or empty) folder, choose another")
    return path


def slope_for(peak: float) -> float:
    """The RescaleSlope for a PET whose largest SUV is ``peak``: :data:`SUV_STEP`, or the
    smallest 6-significant-digit value with ``slope * MAX_STORED >= peak``."""
    if peak <= SUV_STEP * MAX_STORED:
        return SUV_STEP
    exact = peak / MAX_STORED
    unit = 10.0 ** (math.floor(math.log10(exact)) - 5)
    return float(f"{math.ceil(exact / unit) * unit:.6g}")


def encode(suv: np.ndarray, slope: float) -> np.ndarray:
    """SUV -> uint16 stored values; stored × ``slope`` is within slope/2 of ``suv`` (for 0 <= suv <= slope × 65535)."""
    return np.minimum(np.rint(np.clip(suv, 0.0, None) / slope), MAX_STORED).astype(np.uint16)


def write_pet_series(
    pet: sitk.Image, ct: DicomSeries, out: str | os.PathLike[str], source: SyntheticSource, now: datetime | None = None
) -> Path:
    """Write ``pet`` (SUV on the CT series' grid) as a PET Image series in the CT's study, atomically.

    ``out`` is a new (or empty) folder; returns it. ``now`` is the series/content date-time
    (default: the current local time).
    """
    out = check_series_folder(out)
    volume = _on_ct_grid(pet, ct.geometry())
    if not np.all(np.isfinite(volume)):
        raise InputError("the PET holds NaN or infinite values; nothing was written")
    if volume.min(initial=0.0) < -SUV_STEP / 2:
        raise InputError(f"the PET has negative values (down to {volume.min():.3g}); a PET series holds SUV >= 0")
    slope = slope_for(float(volume.max(initial=0.0)))
    common = _series_dataset(ct, source, len(ct.headers), now or datetime.now())
    common.RescaleSlope = f"{slope:.6g}"
    with temporary_folder(out.parent) as tmp, write_errors(f"the DICOM series {out}", out.parent):
        names = []
        for k, header in enumerate(ct.headers):
            names.append(tmp / f"IM{k + 1:05d}.dcm")
            _write(names[-1], _slice_dataset(common, header, k, encode(volume[k], slope)))
        _verify(tmp, names, volume, slope, common.SeriesInstanceUID)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    return out


def _on_ct_grid(pet: sitk.Image, geometry: SliceGeometry) -> np.ndarray:
    """The PET's voxels as a (slices, rows, columns) float32 array in the CT series' order.

    A PET with the CT grid's voxel centres in another axis order or direction (a
    lossless permutation/flip) is brought into that order by nearest-neighbour
    resampling, which then only reorders voxels; any other grid is refused.
    """
    same = (
        tuple(pet.GetSize()) == geometry.size
        and np.allclose(pet.GetOrigin(), geometry.origin, atol=1e-3)
        and np.allclose(pet.GetSpacing(), geometry.spacing, atol=1e-4)
        and np.allclose(pet.GetDirection(), geometry.direction, atol=1e-5)
    )
    if not same:
        if sorted(pet.GetSize()) != sorted(geometry.size) or not _same_corners(pet, geometry):
            raise RegC2PError(
                f"the PET ({'x'.join(map(str, pet.GetSize()))} voxels) is not on the CT series' grid "
                f"({'x'.join(map(str, geometry.size))}); translate the CT read from this DICOM series"
            )
        pet = sitk.Resample(
            pet,
            list(geometry.size),
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            geometry.origin,
            geometry.spacing,
            geometry.direction,
            0.0,
            sitk.sitkFloat32,
        )
    return array_view(pet if pet.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(pet, sitk.sitkFloat32))  # no copy


def _corners(size, to_point) -> np.ndarray:
    points = [to_point((i, j, k)) for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    return np.array(sorted(tuple(round(c, 2) for c in p) for p in points))


def _same_corners(pet: sitk.Image, geometry: SliceGeometry) -> bool:
    reference = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    reference.SetOrigin(geometry.origin)
    reference.SetSpacing(geometry.spacing)
    reference.SetDirection(geometry.direction)
    ct_corners = _corners(geometry.size, lambda index: reference.TransformContinuousIndexToPhysicalPoint(index))
    pet_corners = _corners(pet.GetSize(), lambda index: pet.TransformContinuousIndexToPhysicalPoint(index))
    return bool(np.allclose(ct_corners, pet_corners, atol=0.02))


def _series_dataset(ct: DicomSeries, source: SyntheticSource, count: int, now: datetime) -> Dataset:
    """The attributes every file of the new series shares."""
    first = ct.headers[0]
    ds = Dataset()
    for keyword in COPIED_FROM_CT:
        if keyword in first:
            ds.add(first.data_element(keyword))
        elif keyword in REQUIRED_EMPTY:
            setattr(ds, keyword, "")
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID = PET_IMAGE_STORAGE
    ds.ImageType = ["DERIVED", "PRIMARY"]  # the PET Image IOD allows only PRIMARY as value 2
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDate, ds.AcquisitionTime = "", ""  # nothing was acquired
    ds.Modality = "PT"
    ds.Manufacturer = "RegC2P"
    ds.SoftwareVersions = f"RegC2P {__version__}"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = ""
    ds.SeriesDescription = f"SYNTHETIC PET (RegC2P {source.model_sha256[:8]})"
    ds.DerivationDescription = (
        f"Synthetic PET (SUVbw) computed from CT series {ct.uid} by RegC2P {__version__} with model "
        f"{source.model_name} (SHA-256 {source.model_sha256}); not an acquired PET, not for diagnosis."
    )[:1024]
    ds.ImageComments = "SYNTHETIC PET computed from CT - not an acquired PET, not for diagnosis"
    # PET Series, PET Isotope, NM/PET Patient Orientation: what the IOD requires of a PET series.
    ds.Units = "GML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.NumberOfSlices = count
    ds.CorrectedImage = ""
    ds.DecayCorrection = "NONE"
    ds.CollimatorType = ""
    ds.RadiopharmaceuticalInformationSequence = Sequence()
    ds.PatientOrientationCodeSequence = Sequence()
    ds.PatientGantryRelationshipCodeSequence = Sequence()
    ds.FrameReferenceTime = "0"
    ds.ActualFrameDuration = ""
    # Image Pixel and PET Image: unsigned 16 bit, intercept 0.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept = "0"
    ds.LossyImageCompression = "00"
    low, high = DISPLAY_WINDOW
    ds.WindowCenter, ds.WindowWidth = f"{(low + high) / 2:g}", f"{high - low:g}"
    return ds


def _slice_dataset(common: Dataset, ct_slice: Dataset, k: int, stored: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.update(common)
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImageIndex = k + 1
    for keyword in SLICE_GEOMETRY:
        if keyword in ct_slice:
            ds.add(ct_slice.data_element(keyword))
        elif keyword == "SliceThickness":
            ds.SliceThickness = ""
    reference = Dataset()
    reference.ReferencedSOPClassUID = ct_slice.SOPClassUID
    reference.ReferencedSOPInstanceUID = ct_slice.SOPInstanceUID
    ds.SourceImageSequence = Sequence([reference])
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _write(path: Path, ds: Dataset) -> None:
    try:
        pydicom.dcmwrite(path, ds, enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pydicom 2 (Slicer 5.8): no enforce_file_format
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(path, ds, write_like_original=False)


def _verify(folder: Path, names: list[Path], volume: np.ndarray, slope: float, series_uid: str) -> None:
    """Read the written files back: one series with every slice's values as encoded."""
    found = series_from_files(names)
    if len(found) != 1 or found[0].uid != series_uid or len(found[0].headers) != len(names):
        raise RegC2PError(f"the DICOM series written to {folder} does not read back as one series of {len(names)} files")
    if list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))) != [series_uid]:
        raise RegC2PError(f"the DICOM series written to {folder} is not one series to GDCM")
    for k, name in enumerate(names):
        ds = pydicom.dcmread(name)
        if float(ds.RescaleSlope) != slope or not np.array_equal(ds.pixel_array, encode(volume[k], slope)):
            raise RegC2PError(f"{name.name} does not read back as written (disk full or failing?); nothing was written")
