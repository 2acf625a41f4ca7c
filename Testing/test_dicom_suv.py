"""SUVbw from PET DICOM headers (hand-worked example), CT DICOM in HU, missing-tag messages."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from RegC2PLib.data.dicom_suv import read_ct_hu, read_pet_suv
from RegC2PLib.data.studies import discover_studies, load_study
from RegC2PLib.errors import InputError

PET_SOP = "1.2.840.10008.5.1.4.1.1.128"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"

# Hand-worked example (F-18 FDG):
#   weight 70 kg = 70 000 g, 370 MBq injected at 10:00:00, series starts 11:00:00 (3600 s later),
#   half-life 6586.2 s (109.77 min): decay 2^(-3600 / 6586.2) = 0.684633,
#   decayed dose 370e6 * 0.684633 = 253.314 MBq, SUV factor 70 000 / 253.314e6 = 2.76337e-4 g/Bq.
#   A voxel of 5000 Bq/ml (stored 1000 × slope 5, or 2000 × slope 2.5) has SUVbw 1.38168.
SUV_START = 1.38168
SUV_ADMIN = 0.945946  # no decay: 5000 * 70 000 / 370e6
SUV_NONE_LATE = 1.42600  # slice acquired 3900 s after injection: 5000 * 70 000 / (370e6 * 2^(-3900/6586.2))


def _write_slice(path: Path, sop: str, series: str, frame: str, position, orientation, pixels: np.ndarray, **tags) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame
    ds.PatientID = "phantom"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = ["2.0", "2.5"]  # between rows (y), between columns (x)
    ds.SliceThickness = "3.0"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _radiopharmaceutical(**overrides) -> Dataset:
    info = Dataset()
    info.RadionuclideTotalDose = "370000000"
    info.RadionuclideHalfLife = "6586.2"
    info.RadiopharmaceuticalStartTime = "100000.00"
    for key, value in overrides.items():
        if value is None:
            delattr(info, key)
        else:
            setattr(info, key, value)
    return info


def write_pet_series(
    folder: Path,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    drop: tuple[str, ...] = (),
    radiopharmaceutical: dict | None = None,
    **overrides,
) -> list[tuple[float, float]]:
    """Three 4×5 PET slices, written in shuffled order; returns (slope, intercept) per slice (sorted)."""
    folder.mkdir(parents=True)
    series, frame = generate_uid(), generate_uid()
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    rescale = [(5.0, 0.0), (2.5, 0.0), (0.5, 100.0)]
    stored_hot = [1000, 2000, 9800]  # 5000 Bq/ml in every slice
    for order, k in enumerate((2, 0, 1)):
        pixels = np.full((4, 5), 10, np.uint16)
        pixels[1, 2] = stored_hot[k]
        tags = {
            "Modality": "PT",
            "Units": "BQML",
            "DecayCorrection": "START",
            "CorrectedImage": ["ATTN", "DECY"],
            "PatientWeight": "70",
            "SeriesDate": "20240102",
            "SeriesTime": "110000",
            "AcquisitionDate": "20240102",
            "AcquisitionTime": "110000",
            "RescaleSlope": str(rescale[k][0]),
            "RescaleIntercept": str(rescale[k][1]),
            "InstanceNumber": k + 1,
            "RadiopharmaceuticalInformationSequence": [_radiopharmaceutical(**(radiopharmaceutical or {}))],
        }
        tags.update({key: (value(k) if callable(value) else value) for key, value in overrides.items()})
        for key in drop:
            tags.pop(key)
        position = np.array([-4.0, -3.0, 20.0]) + normal * 3.27 * k
        _write_slice(folder / f"im{order}.dcm", PET_SOP, series, frame, position, orientation, pixels, **tags)
    return rescale


def test_suv_matches_the_hand_worked_example(tmp_path) -> None:
    write_pet_series(tmp_path / "pet")
    pet = read_pet_suv(tmp_path / "pet")
    array = sitk.GetArrayFromImage(pet)
    assert array.shape == (3, 4, 5) and array.dtype == np.float32
    np.testing.assert_allclose(array[:, 1, 2], SUV_START, rtol=1e-5)  # per-slice rescale honoured
    np.testing.assert_allclose(array[0, 0, 0], 10 * 5.0 * 70000 / (370e6 * 2 ** (-3600 / 6586.2)), rtol=1e-5)
    assert pet.GetSpacing() == pytest.approx((2.5, 2.0, 3.27))
    assert pet.GetOrigin() == pytest.approx((-4.0, -3.0, 20.0))


def test_admin_and_none_decay_corrections(tmp_path) -> None:
    write_pet_series(tmp_path / "admin", DecayCorrection="ADMIN")
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_pet_suv(tmp_path / "admin"))[:, 1, 2], SUV_ADMIN, rtol=1e-5)
    # NONE: every slice decays to its own acquisition time (slice 2 five minutes later).
    write_pet_series(tmp_path / "none", DecayCorrection="NONE", AcquisitionTime=lambda k: "110500" if k == 2 else "110000")
    values = sitk.GetArrayFromImage(read_pet_suv(tmp_path / "none"))[:, 1, 2]
    np.testing.assert_allclose(values, [SUV_START, SUV_START, SUV_NONE_LATE], rtol=1e-5)


def test_series_time_after_acquisition_uses_the_earliest_acquisition(tmp_path) -> None:
    write_pet_series(tmp_path / "pet", SeriesTime="123000")  # series time rewritten after reconstruction
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_pet_suv(tmp_path / "pet"))[:, 1, 2], SUV_START, rtol=1e-5)


def test_oblique_series_geometry_matches_simpleitk(tmp_path) -> None:
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    write_pet_series(tmp_path / "pet", orientation=(1.0, 0.0, 0.0, 0.0, c, s))
    ours = read_pet_suv(tmp_path / "pet")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "pet")))
    theirs = reader.Execute()
    assert ours.GetOrigin() == pytest.approx(theirs.GetOrigin(), abs=1e-3)
    assert ours.GetSpacing() == pytest.approx(theirs.GetSpacing(), abs=1e-3)
    assert ours.GetDirection() == pytest.approx(theirs.GetDirection(), abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "tag"),
    [
        ({"drop": ("PatientWeight",)}, "PatientWeight (0010,1030)"),
        ({"drop": ("Units",)}, "Units (0054,1001)"),
        ({"drop": ("DecayCorrection",)}, "DecayCorrection (0054,1102)"),
        ({"drop": ("RadiopharmaceuticalInformationSequence",)}, "RadiopharmaceuticalInformationSequence (0054,0016)"),
        ({"radiopharmaceutical": {"RadionuclideTotalDose": None}}, "RadionuclideTotalDose (0018,1074)"),
        ({"radiopharmaceutical": {"RadionuclideHalfLife": None}}, "RadionuclideHalfLife (0018,1075)"),
        (
            {"radiopharmaceutical": {"RadiopharmaceuticalStartTime": None}},
            "RadiopharmaceuticalStartTime (0018,1072) or RadiopharmaceuticalStartDateTime (0018,1078)",
        ),
    ],
)
def test_missing_tag_is_named_with_the_manual_factor_hint(tmp_path, kwargs, tag) -> None:
    write_pet_series(tmp_path / "pet", **kwargs)
    with pytest.raises(InputError) as info:
        read_pet_suv(tmp_path / "pet")
    message = str(info.value)
    assert f"lacks {tag}, needed for SUVbw" in message
    assert "give the SUV factor by hand (suv_factor = weight in g / decay-corrected injected dose in Bq" in message
    assert "\n" not in message


def test_manual_factor_replaces_the_header(tmp_path) -> None:
    write_pet_series(tmp_path / "pet", drop=("PatientWeight",))
    values = sitk.GetArrayFromImage(read_pet_suv(tmp_path / "pet", suv_factor=2.76337e-4))[:, 1, 2]
    np.testing.assert_allclose(values, SUV_START, rtol=1e-5)
    with pytest.raises(InputError, match="must be a positive number"):
        read_pet_suv(tmp_path / "pet", suv_factor=-1.0)


def test_other_units_and_empty_folder(tmp_path) -> None:
    write_pet_series(tmp_path / "cnts", Units="CNTS")
    with pytest.raises(InputError, match="has Units CNTS, not BQML"):
        read_pet_suv(tmp_path / "cnts")
    write_pet_series(tmp_path / "gml", Units="GML")
    np.testing.assert_allclose(sitk.GetArrayFromImage(read_pet_suv(tmp_path / "gml"))[:, 1, 2], 5000.0, rtol=1e-6)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"holds no DICOM images \(1 files are not DICOM\)"):
        read_pet_suv(tmp_path / "empty")


def write_ct_series(folder: Path, n: int = 6) -> None:
    folder.mkdir(parents=True)
    series, frame = generate_uid(), generate_uid()
    for k in range(n):
        stored = np.full((16, 20), 24, np.uint16)  # -1000 HU (air)
        stored[4:12, 5:15] = 1024 + 40  # soft tissue, 40 HU
        tags = {"Modality": "CT", "RescaleSlope": "1", "RescaleIntercept": "-1024", "InstanceNumber": k + 1}
        _write_slice(
            folder / f"ct{k}.dcm", CT_SOP, series, frame, (-19.0, -15.0, 17.27 + 3.0 * k), (1, 0, 0, 0, 1, 0), stored, **tags
        )


def test_ct_dicom_in_hu_and_a_dicom_study(tmp_path) -> None:
    write_ct_series(tmp_path / "ds" / "s1" / "ct")
    ct = read_ct_hu(tmp_path / "ds" / "s1" / "ct")
    array = sitk.GetArrayFromImage(ct)
    assert array.min() == -1000.0 and array[2, 6, 8] == 40.0
    write_pet_series(tmp_path / "ds" / "s1" / "pet")
    studies, skipped = discover_studies(tmp_path / "ds")
    assert skipped == [] and studies[0].ct.is_dir() and studies[0].pet.is_dir()
    loaded = load_study(studies[0])
    pet = sitk.GetArrayFromImage(loaded.pet)
    assert pet.shape == array.shape
    # The hot PET voxel centre (x -4 + 2*2.5 = 1, y -3 + 1*2 = -1, z 20 + 3.27 = 23.27) is the centre of
    # CT voxel (8, 7, 2): x -19 + 8*2.5, y -15 + 7*2, z 17.27 + 2*3.
    assert loaded.ct.TransformPhysicalPointToIndex((1.0, -1.0, 23.27)) == (8, 7, 2)
    assert pet[2, 7, 8] == pytest.approx(SUV_START, rel=1e-5)
    assert pet.max() <= SUV_START * (1 + 1e-5)
