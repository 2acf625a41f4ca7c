"""Writing small DICOM series for the tests (pydicom): CT and PET slices with the tags
real scanners write, from a SimpleITK image's voxels and geometry.

Imported by the DICOM test modules (a helper module, not a test module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"
PATIENT = {"PatientName": "Test^Phantom", "PatientID": "phantom-7", "PatientBirthDate": "19700101", "PatientSex": "O"}
# SUV per Bq/ml of pet_tags(): 70 000 g / (370 MBq decayed over the hour from 10:00 to 11:00, half-life 6586.2 s).
SUV_PER_BQML = 70000.0 / (370e6 * 2 ** (-3600 / 6586.2))
STUDY = {"StudyInstanceUID": STUDY_UID, "StudyDate": "20240102", "StudyTime": "093000", "AccessionNumber": "A42", "StudyID": "7"}


def write_slice(path: Path, sop: str, pixels: np.ndarray, private: Sequence[tuple] = (), **tags) -> None:
    """One single-frame image file: ``pixels`` (rows, columns) uint16 or int16, then ``tags``;
    ``private`` holds (group, creator, element offset, VR, value) private elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in {**PATIENT, **STUDY}.items():
        setattr(ds, key, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    for group, creator, offset, vr, value in private:
        ds.private_block(group, creator, create=True).add_new(offset, vr, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def geometry_tags(image: sitk.Image, k: int) -> dict[str, object]:
    """ImagePositionPatient/ImageOrientationPatient/PixelSpacing of slice ``k`` of ``image``."""
    d = image.GetDirection()
    return {
        "ImagePositionPatient": [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))],
        "ImageOrientationPatient": [f"{v:.8f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])],
        "PixelSpacing": [f"{image.GetSpacing()[1]:.6f}", f"{image.GetSpacing()[0]:.6f}"],  # rows, columns
        "SliceThickness": f"{image.GetSpacing()[2]:.6f}",
    }


def write_series(
    folder: Path,
    image: sitk.Image,
    sop: str,
    stored: Callable[[np.ndarray, int], tuple[np.ndarray, dict]],
    series_uid: str | None = None,
    frame_uid: str = "1.2.826.0.1.3680043.8.498.77",
    skip: Sequence[int] = (),
    prefix: str = "im",
    slice_tags: Callable[[int], dict] | None = None,
    **tags,
) -> list[Path]:
    """One file per slice of ``image`` (file names in reverse slice order, so readers must sort).

    ``stored(plane, k)`` -> (pixels, per-slice tags) turns slice ``k``'s voxels into stored
    values; ``skip`` leaves slices out; ``tags`` go into every file.
    """
    series_uid = series_uid or generate_uid()
    array = sitk.GetArrayFromImage(image)
    files = []
    for k in range(array.shape[0]):
        if k in skip:
            continue
        pixels, own = stored(array[k], k)
        path = folder / f"{prefix}{array.shape[0] - k:04d}.dcm"
        extra = {"InstanceNumber": k + 1, **geometry_tags(image, k), **tags, **own, **(slice_tags(k) if slice_tags else {})}
        write_slice(path, sop, pixels, SeriesInstanceUID=series_uid, FrameOfReferenceUID=frame_uid, **extra)
        files.append(path)
    return files


def write_ct(folder: Path, image: sitk.Image, **tags) -> list[Path]:
    """A CT series of ``image`` (HU): stored = HU + 1024 with RescaleIntercept -1024, as scanners write it."""
    defaults = {"Modality": "CT", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SeriesDescription": "CT", "SeriesNumber": 2}
    defaults.update({"RescaleSlope": "1", "RescaleIntercept": "-1024", "KVP": "120", "PatientPosition": "HFS"})

    def stored(plane: np.ndarray, k: int) -> tuple[np.ndarray, dict]:
        return (np.rint(plane) + 1024).clip(0, 65535).astype(np.uint16), {}

    return write_series(folder, image, CT_SOP, stored, **{**defaults, **tags})


def radiopharmaceutical(dose: str = "370000000", half_life: str = "6586.2", start: str | None = "100000.00") -> Dataset:
    """A RadiopharmaceuticalInformationSequence item (F-18: 370 MBq at 10:00 by default)."""
    info = Dataset()
    info.RadionuclideTotalDose = dose
    info.RadionuclideHalfLife = half_life
    if start is not None:
        info.RadiopharmaceuticalStartTime = start
    return info


def pet_tags(**overrides) -> dict[str, object]:
    """Series-level tags of an attenuation-corrected BQML PET: 70 kg, START at 11:00."""
    tags = {
        "Modality": "PT",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "SeriesDescription": "PET AC",
        "SeriesNumber": 4,
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY", "SCAT"],
        "PatientWeight": "70",
        "SeriesDate": "20240102",
        "SeriesTime": "110000",
        "AcquisitionDate": "20240102",
        "AcquisitionTime": "110000",
        "RadiopharmaceuticalInformationSequence": [radiopharmaceutical()],
    }
    tags.update(overrides)
    return {key: value for key, value in tags.items() if value is not None}


def write_pet(folder: Path, image: sitk.Image, per_unit: float, **tags) -> list[Path]:
    """A PET series of ``image`` (SUV): stored so that stored × slope = SUV / ``per_unit``
    (``per_unit`` = SUV per Bq/ml for BQML), with a different RescaleSlope per slice."""

    def stored(plane: np.ndarray, k: int) -> tuple[np.ndarray, dict]:
        values = plane / per_unit
        slope = max(float(values.max()), 1e-6) / 30000.0 * (1.0 + 0.1 * k)
        pixels = np.rint(values / slope).clip(0, 65535).astype(np.uint16)
        return pixels, {"RescaleSlope": f"{slope:.10g}", "RescaleIntercept": "0"}

    return write_series(folder, image, PET_SOP, stored, **pet_tags(**tags))


def sr_document(path: Path) -> None:
    """A structured report (a dose report): DICOM without pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "SR", generate_uid(), "1.2.3"
    ds.save_as(path, enforce_file_format=True)


def write_export(folder: Path, ct: sitk.Image, suv: sitk.Image) -> dict[str, str]:
    """A flat PACS export: CT, two-view scout, PET with and without attenuation correction,
    a dose report and a text file, all in one folder. Returns the series UIDs by role."""
    uids = {role: generate_uid() for role in ("ct", "scout", "pet", "nac")}
    write_ct(folder, ct, series_uid=uids["ct"], prefix="ct")
    scout = {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SeriesDescription": "Topogram", "SeriesNumber": 1}
    write_ct(folder, ct, series_uid=uids["scout"], prefix="sc", skip=range(2, ct.GetDepth()), **scout)
    write_pet(folder, suv, SUV_PER_BQML, series_uid=uids["pet"], prefix="pt")
    nac = {"CorrectedImage": ["DECY"], "SeriesDescription": "PET NAC", "SeriesNumber": 5}
    write_pet(folder, suv, SUV_PER_BQML, series_uid=uids["nac"], prefix="nac", **nac)
    sr_document(folder / "dose_report.dcm")
    (folder / "README.TXT").write_text("exported from PACS")
    return uids
