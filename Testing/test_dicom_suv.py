"""SUVbw from PET DICOM headers: the hand-worked example, every decay reference, the GE,
Siemens and Philips tag layouts (synthetic series), the real Philips CNTS series, and
one-line errors naming the missing tag."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_files import CT_SOP, PET_SOP, pet_tags, radiopharmaceutical, write_slice
from pydicom.uid import generate_uid

from RegC2PLib.data.dicom_series import find_series
from RegC2PLib.data.dicom_suv import PHILIPS_AGREEMENT, read_pet_suv, suv_factors
from RegC2PLib.data.studies import discover_studies, load_study, read_ct
from RegC2PLib.errors import InputError

# Hand-worked example (F-18 FDG):
#   weight 70 kg = 70 000 g, 370 MBq injected at 10:00:00, series starts 11:00:00 (3600 s later),
#   half-life 6586.2 s (109.77 min): decay 2^(-3600 / 6586.2) = 0.684633,
#   decayed dose 370e6 * 0.684633 = 253.314 MBq, SUV factor 70 000 / 253.314e6 = 2.76337e-4 g/Bq.
#   A voxel of 5000 Bq/ml (stored 1000 × slope 5, or 2000 × slope 2.5) has SUVbw 1.38168.
SUV_START = 1.38168
SUV_ADMIN = 0.945946  # no decay: 5000 * 70 000 / 370e6
SUV_NONE_LATE = 1.42600  # slice acquired 3900 s after injection: 5000 * 70 000 / (370e6 * 2^(-3900/6586.2))
SUV_PER_BQML = 2.76337e-4
GE, SIEMENS, PHILIPS = "GEMS_PETD_01", "SIEMENS MED PT", "Philips PET Private Group"


def write_pet_series(
    folder: Path,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    drop: tuple[str, ...] = (),
    radiopharmaceutical_tags: dict | None = None,
    **overrides,
) -> None:
    """Three 4×5 PET slices of 5000 Bq/ml at (1, 2) and 10 stored elsewhere, each with its
    own rescale, written in shuffled order. ``overrides`` values may be functions of the slice."""
    series, frame = generate_uid(), generate_uid()
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    rescale = [(5.0, 0.0), (2.5, 0.0), (0.5, 100.0)]
    stored_hot = [1000, 2000, 9800]  # 5000 Bq/ml in every slice
    for order, k in enumerate((2, 0, 1)):
        pixels = np.full((4, 5), 10, np.uint16)
        pixels[1, 2] = stored_hot[k]
        tags = pet_tags(RadiopharmaceuticalInformationSequence=[radiopharmaceutical(**(radiopharmaceutical_tags or {}))])
        tags.update(RescaleSlope=str(rescale[k][0]), RescaleIntercept=str(rescale[k][1]), InstanceNumber=k + 1)
        tags.update({key: (value(k) if callable(value) else value) for key, value in overrides.items()})
        for key in drop:
            tags.pop(key)
        position = np.array([-4.0, -3.0, 20.0]) + normal * 3.27 * k
        write_slice(
            folder / f"im{order}.dcm", PET_SOP, pixels, SeriesInstanceUID=series, FrameOfReferenceUID=frame,
            ImagePositionPatient=[f"{v:.4f}" for v in position], ImageOrientationPatient=[f"{v:.6f}" for v in orientation],
            PixelSpacing=["2.0", "2.5"], SliceThickness="3.0", **tags,
        )  # fmt: skip


def hot_values(folder: Path, **kwargs) -> np.ndarray:
    """SUV of the hot voxel in each slice."""
    return sitk.GetArrayFromImage(read_pet_suv(folder, **kwargs))[:, 1, 2]


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
        ({"radiopharmaceutical_tags": {"dose": ""}}, "RadionuclideTotalDose (0018,1074)"),
        ({"radiopharmaceutical_tags": {"half_life": ""}}, "RadionuclideHalfLife (0018,1075)"),
        (
            {"radiopharmaceutical_tags": {"start": None}},
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
    assert "give the SUV factor by hand (suv_factor = SUV per rescaled pixel value" in message
    assert "\n" not in message


def test_manual_factor_replaces_the_header(tmp_path) -> None:
    write_pet_series(tmp_path / "pet", drop=("PatientWeight",))
    values = sitk.GetArrayFromImage(read_pet_suv(tmp_path / "pet", suv_factor=2.76337e-4))[:, 1, 2]
    np.testing.assert_allclose(values, SUV_START, rtol=1e-5)
    with pytest.raises(InputError, match="must be a positive number"):
        read_pet_suv(tmp_path / "pet", suv_factor=-1.0)


def test_gml_is_used_as_stored_and_other_units_are_refused(tmp_path) -> None:
    write_pet_series(tmp_path / "gml", Units="GML")
    np.testing.assert_allclose(hot_values(tmp_path / "gml"), 5000.0, rtol=1e-6)
    write_pet_series(tmp_path / "cps", Units="CPS")
    with pytest.raises(InputError, match=r"has Units CPS, not BQML \(Bq/ml\), CNTS \(Philips counts\) or GML; give the SUV"):
        read_pet_suv(tmp_path / "cps")


def write_ct_series(folder: Path, n: int = 6) -> None:
    series, frame = generate_uid(), generate_uid()
    for k in range(n):
        stored = np.full((16, 20), 24, np.uint16)  # -1000 HU (air)
        stored[4:12, 5:15] = 1024 + 40  # soft tissue, 40 HU
        write_slice(
            folder / f"ct{k}.dcm", CT_SOP, stored, Modality="CT", RescaleSlope="1", RescaleIntercept="-1024",
            InstanceNumber=k + 1, SeriesInstanceUID=series, FrameOfReferenceUID=frame, PixelSpacing=["2.0", "2.5"],
            ImagePositionPatient=["-19.0", "-15.0", f"{17.27 + 3.0 * k:.2f}"], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
        )  # fmt: skip


def test_ct_dicom_in_hu_and_a_dicom_study(tmp_path) -> None:
    write_ct_series(tmp_path / "ds" / "s1" / "ct")
    ct = read_ct(tmp_path / "ds" / "s1" / "ct")
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


# --------------------------------------------------------------------------- vendor layouts


def test_ge_scan_datetime_is_the_start_when_the_series_time_was_rewritten(tmp_path) -> None:
    # GE: SeriesTime rewritten after reconstruction (12:30), the bed's AcquisitionTime 11:05,
    # the private scan DateTime says the scan started at 11:00 (QIBA's rule for GE).
    late = {"SeriesTime": "123000", "AcquisitionTime": "110500"}
    ge = [(0x0009, GE, 0x0D, "DT", "20240102110000")]
    write_pet_series(tmp_path / "ge", private=ge, **late)
    np.testing.assert_allclose(hot_values(tmp_path / "ge"), SUV_START, rtol=1e-5)
    # Without it (or under another private creator) the earliest acquisition is the start: 5 minutes later.
    write_pet_series(tmp_path / "other", private=[(0x0009, "ACME PET", 0x0D, "DT", "20240102110000")], **late)
    np.testing.assert_allclose(hot_values(tmp_path / "other"), SUV_NONE_LATE, rtol=1e-5)


def test_siemens_decay_correction_datetime_is_the_start_when_the_series_time_was_rewritten(tmp_path) -> None:
    siemens = [(0x0071, SIEMENS, 0x22, "DT", "20240102110000.000000")]
    write_pet_series(tmp_path / "siemens", private=siemens, SeriesTime="123000", AcquisitionTime="110500")
    np.testing.assert_allclose(hot_values(tmp_path / "siemens"), SUV_START, rtol=1e-5)


def test_ge_administration_datetime_stands_in_for_a_missing_injection_time(tmp_path) -> None:
    ge = [(0x0009, GE, 0x3B, "DT", "20240102100000")]
    write_pet_series(tmp_path / "ge", radiopharmaceutical_tags={"start": None}, private=ge)
    np.testing.assert_allclose(hot_values(tmp_path / "ge"), SUV_START, rtol=1e-5)


def _philips(concentration: float | None, suv: float | None) -> list[tuple]:
    tags = [(0x7053, PHILIPS, 0x09, "DS", f"{concentration:.6f}")] if concentration else []
    return tags + ([(0x7053, PHILIPS, 0x00, "DS", f"{suv:.6g}")] if suv else [])


def test_philips_counts_through_the_activity_concentration_scale_factor(tmp_path) -> None:
    # 5000 counts at the hot voxel; 1.5 Bq/ml per count -> 7500 Bq/ml -> SUV 1.5 × 1.38168.
    per_count = 1.5 * SUV_PER_BQML
    write_pet_series(tmp_path / "cnts", Units="CNTS", private=_philips(1.5, per_count))
    np.testing.assert_allclose(hot_values(tmp_path / "cnts"), 1.5 * SUV_START, rtol=1e-5)
    # Philips' SUV factor alone (no (7053,1009); here even the weight is missing) is used as Philips computed it.
    write_pet_series(tmp_path / "only_suv", Units="CNTS", drop=("PatientWeight",), private=_philips(None, per_count))
    np.testing.assert_allclose(hot_values(tmp_path / "only_suv"), 1.5 * SUV_START, rtol=1e-5)


def test_philips_factors_that_disagree_are_refused(tmp_path) -> None:
    per_count = 1.5 * SUV_PER_BQML * (1 + 2.5 * PHILIPS_AGREEMENT)  # e.g. a wrong weight or dose in the header
    write_pet_series(tmp_path / "cnts", Units="CNTS", private=_philips(1.5, per_count))
    with pytest.raises(InputError, match=r"\(7053,1000\) 0\.000435.* per count disagrees with 0\.000414.*\(-4\.8 %\)"):
        read_pet_suv(tmp_path / "cnts")


def test_philips_counts_without_a_scale_factor_name_the_tag(tmp_path) -> None:
    write_pet_series(tmp_path / "cnts", Units="CNTS")
    with pytest.raises(InputError) as info:
        read_pet_suv(tmp_path / "cnts")
    message = str(info.value)
    assert "lacks Philips' Activity Concentration Scale Factor (7053,1009), needed for SUVbw" in message
    assert "give the SUV factor by hand (suv_factor" in message and "\n" not in message
    np.testing.assert_allclose(hot_values(tmp_path / "cnts", suv_factor=1e-4), 0.5, rtol=1e-5)


@pytest.mark.slow
def test_real_philips_cnts_series(shared_data: Path, assert_same_geometry) -> None:
    """HN-CHUS-052 (TCIA Head-Neck-PET-CT, CC BY 3.0): 255 slices in counts, Philips' own
    SUV Scale Factor 0.000434 per count; the series time (11:11) is after the scan (09:35)."""
    folder = shared_data / "real" / "dicom" / "HN-CHUS-052-PET"
    (series,) = find_series(folder)
    assert len(series.headers) == 255
    factors = suv_factors(series.headers)
    assert np.ptp(factors) == 0.0
    assert factors[0] == pytest.approx(0.000434, rel=0.005)
    pet = read_pet_suv(folder)
    reference = sitk.ReadImage(str(shared_data / "real" / "headneck" / "HN-CHUS-052" / "pet.nii.gz"))
    assert_same_geometry(pet, reference, 1e-3)
    ours, theirs = sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(reference)
    assert np.abs(ours - theirs).max() <= 0.005 * theirs.max()
    # The per-file rescale slopes differ (1.0 to 3.9): each slice is scaled by its own.
    first = pydicom.dcmread(series.files[0])
    np.testing.assert_allclose(ours[0], first.pixel_array * float(first.RescaleSlope) * factors[0], rtol=1e-5)
