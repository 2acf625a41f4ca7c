"""The synthetic PET as a DICOM PET Image series: dciodvfy finds no error, it reads back
(SimpleITK's GDCM reader and pydicom) to the same SUV within the rescale step and the
CT's geometry, it sits in the CT's study, and writing is atomic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_files import STUDY_UID, write_ct

from RegC2PLib import atomic, dicom_output
from RegC2PLib.data.dicom_series import DicomVolume, find_series, read_ct_series
from RegC2PLib.dicom_output import PET_IMAGE_STORAGE, SUV_STEP, SyntheticSource, slope_for, write_pet_series
from RegC2PLib.errors import InputError, OutputError, RegC2PError

SOURCE = SyntheticSource("default.safetensors", "50b6052e" + "0123456789abcdef" * 3 + "01234567")


@pytest.fixture
def ct(tmp_path, make_ct, directions) -> DicomVolume:
    """An oblique CT written as a DICOM series and read back."""
    image = make_ct((5, 16, 20), spacing=(0.9, 0.8, 2.5), direction=directions["OBLIQUE"], origin=(-10.0, 5.0, 30.0))
    write_ct(tmp_path / "ct", image)
    return read_ct_series(tmp_path / "ct")


def _suv(ct: DicomVolume, peak: float = 50.0) -> sitk.Image:
    """A PET on the CT grid: a ramp from 0 to ``peak`` SUV over the voxels (every 0.001 step matters)."""
    size = ct.image.GetSize()
    ramp = np.linspace(0.0, peak, int(np.prod(size)), dtype=np.float64).reshape(size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(ramp)
    image.CopyInformation(ct.image)
    return image


def _errors_of_dciodvfy(path: Path) -> list[str]:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_the_series_passes_dciodvfy(tmp_path, ct) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; scripts/setup.sh installs it")
    out = write_pet_series(_suv(ct), ct.series, tmp_path / "pet.dcm", SOURCE)
    files = sorted(out.iterdir())
    assert len(files) == 5
    for path in files:
        assert _errors_of_dciodvfy(path) == [], path.name
    # The validator does catch a broken file (so an empty list above means something).
    broken = pydicom.dcmread(files[0])
    del broken.Units
    broken.save_as(tmp_path / "broken.dcm")
    assert any("Units" in line for line in _errors_of_dciodvfy(tmp_path / "broken.dcm"))


def test_the_series_reads_back_to_the_same_suv_and_the_ct_geometry(tmp_path, ct, assert_same_geometry) -> None:
    pet = _suv(ct)
    out = write_pet_series(pet, ct.series, tmp_path / "pet.dcm", SOURCE)
    (uid,) = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(out))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(out), uid))
    gdcm = reader.Execute()
    assert_same_geometry(gdcm, ct.image, 1e-4)
    expected = sitk.GetArrayFromImage(pet)
    assert np.abs(sitk.GetArrayFromImage(gdcm) - expected).max() <= SUV_STEP / 2 + 1e-5
    (series,) = find_series(out)
    assert series.uid == uid
    ours = np.stack([pydicom.dcmread(f).pixel_array * float(h.RescaleSlope) for f, h in zip(series.files, series.headers)])
    assert np.abs(ours - expected).max() <= SUV_STEP / 2 + 1e-5
    assert series.geometry() == ct.series.geometry()


def test_the_series_belongs_to_the_ct_study_and_says_it_is_synthetic(tmp_path, ct) -> None:
    out = write_pet_series(_suv(ct), ct.series, tmp_path / "pet.dcm", SOURCE)
    (series,) = find_series(out)
    for pet_slice, ct_slice in zip(series.headers, ct.series.headers):
        assert pet_slice.SOPClassUID == PET_IMAGE_STORAGE and pet_slice.Modality == "PT"
        assert pet_slice.StudyInstanceUID == ct_slice.StudyInstanceUID == STUDY_UID
        assert pet_slice.FrameOfReferenceUID == ct_slice.FrameOfReferenceUID
        assert pet_slice.SeriesInstanceUID != ct_slice.SeriesInstanceUID
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            assert pet_slice[keyword].value == ct_slice[keyword].value, keyword
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber"):
            assert pet_slice[keyword].value == ct_slice[keyword].value, keyword
        assert pet_slice.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_slice.SOPInstanceUID
        assert (pet_slice.Units, list(pet_slice.ImageType), float(pet_slice.RescaleIntercept)) == (
            "GML",
            ["DERIVED", "PRIMARY"],
            0.0,
        )
        assert pet_slice.AcquisitionDate == "" and "PatientPosition" not in pet_slice  # nothing acquired, nothing invented
    first = series.headers[0]
    assert "SYNTHETIC" in first.SeriesDescription and SOURCE.model_sha256[:8] in first.SeriesDescription
    assert SOURCE.model_name in first.DerivationDescription and SOURCE.model_sha256 in first.DerivationDescription
    assert ct.series.uid in first.DerivationDescription
    assert [h.InstanceNumber for h in series.headers] == [1, 2, 3, 4, 5]


def test_the_slope_keeps_a_thousandth_of_suv_up_to_65_and_grows_beyond(tmp_path, ct) -> None:
    assert slope_for(50.0) == SUV_STEP and slope_for(65.535) == SUV_STEP
    assert slope_for(80.0) == pytest.approx(80.0 / 65535, rel=1e-5) and slope_for(80.0) * 65535 >= 80.0
    pet = _suv(ct, peak=80.0)
    out = write_pet_series(pet, ct.series, tmp_path / "pet.dcm", SOURCE)
    (series,) = find_series(out)
    slope = float(series.headers[0].RescaleSlope)
    assert slope == slope_for(80.0)
    back = np.stack([pydicom.dcmread(f).pixel_array * slope for f in series.files])
    assert np.abs(back - sitk.GetArrayFromImage(pet)).max() <= slope / 2 + 1e-5


def test_a_pet_on_the_same_voxels_in_another_axis_order_is_written_in_the_ct_order(tmp_path, ct) -> None:
    pet = _suv(ct)
    flipped = sitk.DICOMOrient(pet, "RAS")  # same voxel centres, other index order
    assert flipped.GetDirection() != pet.GetDirection()
    out = write_pet_series(flipped, ct.series, tmp_path / "pet.dcm", SOURCE)
    (series,) = find_series(out)
    back = np.stack([pydicom.dcmread(f).pixel_array * SUV_STEP for f in series.files])
    assert np.abs(back - sitk.GetArrayFromImage(pet)).max() <= SUV_STEP / 2 + 1e-5


def test_bad_pets_and_folders_are_refused_and_nothing_is_left(tmp_path, ct, make_ct) -> None:
    pet = _suv(ct)
    nan = sitk.Image(pet)
    nan[1, 1, 1] = float("nan")
    negative = pet - 1.0
    shifted = sitk.Image(pet)
    shifted.SetOrigin(tuple(o + 3.0 for o in pet.GetOrigin()))
    cases = [
        (nan, "NaN or infinite", InputError),
        (negative, r"negative values \(down to -1\)", InputError),
        (shifted, "is not on the CT series' grid", RegC2PError),
        (make_ct((4, 16, 20)), "is not on the CT series' grid", RegC2PError),
    ]
    (tmp_path / "out").mkdir()
    for image, message, error in cases:
        with pytest.raises(error, match=message):
            write_pet_series(image, ct.series, tmp_path / "out" / "pet.dcm", SOURCE)
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "out" / "taken").mkdir()
    (tmp_path / "out" / "taken" / "old.dcm").write_bytes(b"x")
    with pytest.raises(InputError, match="already exists; a DICOM series is written into a new"):
        write_pet_series(pet, ct.series, tmp_path / "out" / "taken", SOURCE)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["taken"]
    (tmp_path / "out" / "empty").mkdir()
    assert len(list(write_pet_series(pet, ct.series, tmp_path / "out" / "empty", SOURCE).iterdir())) == 5


def test_a_write_that_fails_half_way_leaves_nothing(tmp_path, ct, monkeypatch) -> None:
    written = []
    real_write = dicom_output._write

    def failing(path: Path, ds) -> None:
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        real_write(path, ds)
        written.append(path)

    monkeypatch.setattr(dicom_output, "_write", failing)
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match=r"cannot write the DICOM series .*pet\.dcm \(.*No space left on device\)"):
        write_pet_series(_suv(ct), ct.series, tmp_path / "out" / "pet.dcm", SOURCE)
    assert len(written) == 3 and not any(p.exists() for p in written)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_file_that_does_not_read_back_as_written_is_caught(tmp_path, ct, monkeypatch) -> None:
    real_write = dicom_output._write

    def corrupting(path: Path, ds) -> None:
        real_write(path, ds)
        if path.name == "IM00004.dcm":  # a disk that drops the end of a file
            path.write_bytes(path.read_bytes()[:-10] + b"\0" * 10)

    monkeypatch.setattr(dicom_output, "_write", corrupting)
    (tmp_path / "out").mkdir()
    with pytest.raises(RegC2PError, match=r"IM00004\.dcm does not read back as written"):
        write_pet_series(_suv(ct), ct.series, tmp_path / "out" / "pet.dcm", SOURCE)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_killed_writers_temporary_is_removed_and_a_name_too_long_is_refused_first(tmp_path, ct) -> None:
    """A kill during a write left the partial series in a hidden folder for good; a name over
    the file system's limit failed only after the whole PET was encoded."""
    out = tmp_path / "out"
    out.mkdir()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = out / f"{atomic.TEMP_PREFIX}{atomic._host()}-{ended.stdout.strip()}-0badf00d"  # its writer is gone
    stale.mkdir()
    (stale / "IM00001.dcm").write_bytes(b"half a slice")
    with pytest.raises(InputError, match="bytes long, more than the"):
        write_pet_series(_suv(ct), ct.series, out / ("p" * 300 + ".dcm"), SOURCE)
    write_pet_series(_suv(ct), ct.series, out / "pet.dcm", SOURCE)
    assert sorted(p.name for p in out.iterdir()) == ["pet.dcm"]
