"""DICOM trees with several series: discovery, the choice of the CT and of the
attenuation-corrected PET, and the geometry checks shared by CT and PET series."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import SUV_PER_BQML, sr_document, write_ct, write_export, write_pet, write_series, write_slice
from pydicom.uid import generate_uid

from RegC2PLib.data.dicom_series import choose_series, find_series, read_ct_series
from RegC2PLib.data.dicom_suv import read_pet_suv
from RegC2PLib.errors import InputError
from RegC2PLib.volume_io import read_image

HOW = "choose one with --series UID or --series NUMBER"


@pytest.fixture
def ct(make_ct) -> sitk.Image:
    return make_ct((6, 20, 24), spacing=(1.5, 1.25, 3.0), origin=(-20.0, -15.0, 100.0))


@pytest.fixture
def suv(ct) -> sitk.Image:
    """A PET in SUV on the CT grid: 1 in the body, 0.05 in air, a hot spot of 8."""
    array = np.where(sitk.GetArrayFromImage(ct) > -500, 1.0, 0.05).astype(np.float32)
    array[3, 10, 12] = 8.0
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct)
    return image


def test_a_flat_export_gives_the_ct_and_the_attenuation_corrected_pet(tmp_path, ct, suv, assert_same_geometry) -> None:
    uids = write_export(tmp_path / "export", ct, suv)
    found = find_series(tmp_path / "export")
    assert sorted(s.uid for s in found) == sorted(uids.values())  # the report and the text file are not image series
    assert choose_series(found, "CT", None, "export", HOW).uid == uids["ct"]
    assert choose_series(found, "PT", None, "export", HOW).uid == uids["pet"]
    volume = read_ct_series(tmp_path / "export")
    assert_same_geometry(volume.image, ct, 1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(ct))
    pet = read_pet_suv(tmp_path / "export")
    assert_same_geometry(pet, ct, 1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(pet), sitk.GetArrayFromImage(suv), atol=2e-3)


def test_a_series_spread_over_sub_folders_is_read_as_one(tmp_path, ct, assert_same_geometry) -> None:
    uid = generate_uid()
    write_ct(tmp_path / "DICOM" / "0001", ct, series_uid=uid, skip=(3, 4, 5))
    write_ct(tmp_path / "DICOM" / "0002" / "deeper", ct, series_uid=uid, skip=(0, 1, 2))
    (tmp_path / "DICOM" / ".hidden").mkdir()
    write_ct(tmp_path / "DICOM" / ".hidden", ct, series_uid=generate_uid())  # hidden folders are not searched
    (found,) = find_series(tmp_path)
    assert found.uid == uid and len(found.headers) == 6
    assert_same_geometry(read_image(tmp_path), ct, 1e-5)


def test_several_ct_series_are_listed_with_how_to_choose(tmp_path, ct, make_ct) -> None:
    thin, thick = generate_uid(), generate_uid()
    write_ct(tmp_path, ct, series_uid=thin, prefix="a", SeriesDescription="CT 3mm", SeriesNumber=2)
    write_ct(tmp_path, make_ct((4, 20, 24)), series_uid=thick, prefix="b", SeriesDescription="CT 5mm", SeriesNumber=3)
    with pytest.raises(InputError) as info:
        read_ct_series(tmp_path, how_to_choose=HOW)
    message = str(info.value)
    assert "holds 2 CT image series" in message and HOW in message and "\n" not in message
    assert f"{thin} 'CT 3mm' (series 2, CT, 6 slices)" in message
    assert f"{thick} 'CT 5mm' (series 3, CT, 4 slices)" in message
    assert read_ct_series(tmp_path, thick).series.uid == thick
    assert read_ct_series(tmp_path, "2").image.GetSize() == (24, 20, 6)


def test_scouts_and_derived_series_give_way_to_the_acquired_ct(tmp_path, ct) -> None:
    acquired = generate_uid()
    write_ct(tmp_path, ct, series_uid=acquired, prefix="a")
    write_ct(tmp_path, ct, prefix="b", ImageType=["DERIVED", "SECONDARY", "REFORMATTED"], SeriesNumber=600)
    write_ct(tmp_path, ct, prefix="c", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesNumber=1)
    assert read_ct_series(tmp_path).series.uid == acquired
    # A derived CT alone (converted or anonymised data often says DERIVED) is used.
    derived = generate_uid()
    write_ct(tmp_path / "only", ct, series_uid=derived, ImageType=["DERIVED", "SECONDARY"])
    assert read_ct_series(tmp_path / "only").series.uid == derived


def test_pet_without_attenuation_correction_is_never_used_for_suv(tmp_path, suv) -> None:
    write_pet(tmp_path / "nac", suv, SUV_PER_BQML, CorrectedImage=["DECY", "NORM"])
    with pytest.raises(InputError, match=r"holds PET only without attenuation correction \(CorrectedImage \(0028,0051\) lacks"):
        read_pet_suv(tmp_path / "nac")
    with pytest.raises(InputError, match="not attenuation-corrected"):
        read_pet_suv(tmp_path / "nac", series="4")  # chosen explicitly: still refused
    write_pet(tmp_path / "untold", suv, SUV_PER_BQML, CorrectedImage=None)
    with pytest.raises(InputError, match=r"has no CorrectedImage \(0028,0051\): it is not attenuation-corrected"):
        read_pet_suv(tmp_path / "untold", series="4")


def test_explicit_choices_that_do_not_fit(tmp_path, ct, suv) -> None:
    uids = write_export(tmp_path, ct, suv)
    with pytest.raises(InputError, match=r"holds no series with UID or number 9\.9\.9; it holds: "):
        read_ct_series(tmp_path, "9.9.9")
    with pytest.raises(InputError, match=f"series {uids['pet']} 'PET AC' .* is PT, not CT"):
        read_ct_series(tmp_path, uids["pet"])
    write_ct(tmp_path, ct, prefix="d", SeriesNumber=4)  # the CT and the PET are both series 4
    assert read_ct_series(tmp_path, "4").series.modality == "CT"
    assert sitk.GetArrayFromImage(read_pet_suv(tmp_path, series="4")).max() == pytest.approx(8.0, abs=2e-3)


def test_a_folder_without_dicom_images(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("no images")
    sr_document(tmp_path / "report.dcm")
    with pytest.raises(InputError, match="holds no DICOM image series"):
        read_image(tmp_path)


# --------------------------------------------------------------------------- geometry


def _shifted(k: int, along: float, ct: sitk.Image) -> dict:
    """Slice ``k``'s position moved ``along`` mm along the slice normal (z)."""
    position = np.array(ct.TransformIndexToPhysicalPoint((0, 0, k))) + np.array([0.0, 0.0, along])
    return {"ImagePositionPatient": [f"{v:.6f}" for v in position]}


@pytest.mark.parametrize(
    ("layout", "fragment"),
    [
        ({"skip": (3,)}, "1 slice is missing — 6.00 mm between im0004.dcm and im0002.dcm (at 106.00 and 112.00 mm"),
        ({"skip": (2, 3)}, "2 slices are missing — 9.00 mm between"),
        ({"shift": (3, 1.2)}, "uneven slice spacing (1.80-4.20 mm) — 4.20 mm between"),
        ({"shift": (3, -3.0)}, "2 slices share positions (first im0004.dcm and im0003.dcm at 106.00 mm)"),
        ({"rows": 4}, "file im0002.dcm has another Rows than"),
    ],
)
def test_broken_stacks_are_refused_naming_the_problem(tmp_path, ct, layout, fragment) -> None:
    def slice_tags(k: int) -> dict:
        if "shift" in layout and k == layout["shift"][0]:
            return _shifted(k, layout["shift"][1], ct)
        return {}

    def stored(plane: np.ndarray, k: int):
        if "rows" in layout and k == layout["rows"]:
            plane = plane[:-1]
        return (np.rint(plane) + 1024).astype(np.uint16), {"RescaleIntercept": "-1024", "RescaleSlope": "1"}

    write_series(
        tmp_path, ct, "1.2.840.10008.5.1.4.1.1.2", stored, skip=layout.get("skip", ()), slice_tags=slice_tags, Modality="CT"
    )
    with pytest.raises(InputError) as info:
        read_image(tmp_path)  # before: read with averaged spacing, slices misplaced
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_missing_pet_slice_is_refused_like_a_ct_one(tmp_path, suv) -> None:
    write_pet(tmp_path, suv, SUV_PER_BQML, skip=(2,))
    with pytest.raises(InputError, match=r"PET series .* 'PET AC': 1 slice is missing — 6\.00 mm between"):
        read_pet_suv(tmp_path)


def test_gantry_tilt_is_refused_and_said_plainly(tmp_path, make_ct, rotation_direction) -> None:
    # Slices tilted 15° about x while the table moves straight along z: a sheared stack.
    tilted = make_ct((5, 16, 20), spacing=(1.0, 1.0, 3.0), direction=rotation_direction(15.0, (1, 0, 0)))
    origin = np.array(tilted.GetOrigin())

    def straight(k: int) -> dict:
        return {"ImagePositionPatient": [f"{v:.6f}" for v in origin + np.array([0.0, 0.0, 3.0 * k])]}

    write_ct(tmp_path, tilted, slice_tags=straight)
    with pytest.raises(InputError, match=r"is tilted: .* \(gantry tilt of about 15\.0°\).* refused rather than resampled"):
        read_image(tmp_path)


def test_multi_frame_objects_are_refused(tmp_path, ct) -> None:
    for name in ("enhanced1.dcm", "enhanced2.dcm"):  # two enhanced CT objects of two frames each
        tags = {"Modality": "CT", "SeriesInstanceUID": generate_uid(), "NumberOfFrames": 2, "ImageType": ["ORIGINAL", "PRIMARY"]}
        write_slice(tmp_path / name, "1.2.840.10008.5.1.4.1.1.2.1", np.zeros((4, 5), np.uint16), **tags)
    with pytest.raises(
        InputError, match=r"holds no CT image series, only scouts, single slices or multi-frame .*multi-frame object of 2"
    ):
        read_image(tmp_path)
    (found, _) = find_series(tmp_path)
    with pytest.raises(InputError, match=r"multi-frame .* of 2 frames"):
        found.geometry()


def test_oblique_ct_geometry_matches_gdcm(tmp_path, make_ct, directions, assert_same_geometry) -> None:
    oblique = make_ct((5, 16, 20), spacing=(0.8, 0.9, 2.5), direction=directions["OBLIQUE"], origin=(-10.0, 5.0, 30.0))
    write_ct(tmp_path, oblique)
    ours = read_image(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    assert_same_geometry(ours, reader.Execute(), 1e-4)
    assert_same_geometry(ours, oblique, 1e-5)
    assert math.isclose(ours.GetSpacing()[2], 2.5, abs_tol=1e-6)
